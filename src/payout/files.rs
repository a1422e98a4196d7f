//! The files target's sink: a batch's file rendered at delivery time,
//! refused if it would differ from one sent before, dropped into the bank's
//! directory (checksum last) or uploaded.

use super::*;

/// Delivers batch files: each message on a files target names a batch,
/// which is rendered from the payout register (byte-identical every time),
/// checked against the SHA-256 of any earlier delivery, and dropped into the
/// bank's directory with its checksum file, or uploaded.
pub struct FilesSink {
    store: Arc<dyn crate::store::BatchFiles>,
    payouts: PayoutsConfig,
    bank: BankTarget,
    upload: Option<crate::connectors::http::HttpSink>,
}

impl FilesSink {
    /// A sink for `bank`'s files: `upload` is the client for an http bank
    /// connector (its URL, TLS and authentication).
    pub fn new(
        store: Arc<dyn crate::store::BatchFiles>,
        payouts: PayoutsConfig,
        bank: BankTarget,
        upload: Option<crate::connectors::http::HttpSink>,
    ) -> Self {
        FilesSink {
            store,
            payouts,
            bank,
            upload,
        }
    }

    async fn send(&self, m: &Claimed) -> Result<Delivered, DeliveryError> {
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| DeliveryError::Request(format!("not a batch file message: {e}")))?;
        let id = v["batch_id"]
            .as_str()
            .ok_or_else(|| DeliveryError::Request("the message names no batch_id".into()))?;
        let io =
            |e: crate::store::StoreError| DeliveryError::Io(format!("the payout register: {e}"));
        let batch = self
            .store
            .batch(id)
            .await
            .map_err(io)?
            .ok_or_else(|| DeliveryError::Request(format!("there is no batch {id}")))?;
        // A file made again must be the one sent before, byte for byte.
        let before = self.store.written(id).await.map_err(io)?;
        let same = |digest: &str| match &before {
            Some(before) if before != digest => Err(DeliveryError::Request(format!(
                "batch {id}: its file would differ from the one sent (SHA-256 {before}); not sent"
            ))),
            _ => Ok(()),
        };
        let name = self.bank.file_name(&batch);
        let (delivered, digest) = match (&self.bank.dest, &self.upload) {
            (_, Some(http)) => {
                let bytes = render(&self.payouts, &*self.store, &batch, &self.bank.format)
                    .await
                    .map_err(|e| DeliveryError::Request(e.to_string()))?;
                let digest = crate::connectors::file::sha256_hex(&bytes);
                same(&digest)?;
                let content_type = match self.bank.format {
                    BankFormat::Pain(_) => "application/xml",
                    BankFormat::Layout(_) => "application/octet-stream",
                };
                let headers = [
                    ("X-File-Name", name.clone()),
                    ("X-Checksum-SHA256", digest.clone()),
                ];
                let mut d = http
                    .upload(bytes, &m.idem_key, &headers, content_type)
                    .await?;
                d.excerpt = Some(format!("uploaded to {} as {name}", http.url()));
                (d, digest)
            }
            (Destination::Dir(dir), None) => {
                // Rendered straight into a dot-file beside its place and
                // hashed as it goes (a file is never held in memory whole),
                // then put in place, and its checksum file after it.
                let failed = |e: String| DeliveryError::Io(format!("{name}: {e}"));
                let tmp = crate::connectors::file::temp_path(dir, &name);
                let file = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::File::create(&tmp))
                    .map_err(|e| failed(e.to_string()))?;
                let out = crate::connectors::file::Hashing::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    file,
                ));
                let written =
                    match render_to(&self.payouts, &*self.store, &batch, &self.bank.format, out)
                        .await
                    {
                        Ok(out) => {
                            let (w, digest) = out.finish();
                            same(&digest)
                                .and_then(|()| {
                                    w.into_inner().map_err(|e| failed(e.error().to_string()))
                                })
                                .map(|file| (file, digest))
                        }
                        Err(e) => Err(DeliveryError::Request(e.to_string())),
                    };
                let (file, digest) = match written {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                };
                let (dir, file_name, sum) = (dir.clone(), name.clone(), digest.clone());
                tokio::task::spawn_blocking(move || {
                    crate::connectors::file::place_with_checksum(&dir, &file_name, file, &sum)
                })
                .await
                .map_err(|e| DeliveryError::Io(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
                let d = Delivered {
                    status_code: None,
                    excerpt: Some(format!("written to {}", self.bank.place(&batch))),
                };
                (d, digest)
            }
            (Destination::Upload(u), None) => {
                return Err(DeliveryError::Request(format!(
                    "no HTTP client for the upload to {u}"
                )))
            }
        };
        self.store.mark_written(id, &digest).await.map_err(io)?;
        Ok(delivered)
    }
}

impl Sink for FilesSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.send(m))
    }
}
