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
    sftp: Option<crate::connectors::sftp::SftpClient>,
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
            sftp: None,
        }
    }

    /// The client of an sftp bank connector's server.
    pub fn with_sftp(mut self, sftp: Option<crate::connectors::sftp::SftpClient>) -> Self {
        self.sftp = sftp;
        self
    }

    /// A batch whose file was sent before and whose message comes again
    /// (a retry after the send, not an operator's resend): nothing is sent
    /// again; a checksum file a crash left unwritten is written.
    async fn finish(&self, batch: &BatchRow, digest: &str) -> Result<Delivered, DeliveryError> {
        let name = self.bank.file_name(batch);
        let finished = match (&self.bank.dest, &self.sftp) {
            (Destination::Dir(dir), _) => {
                let (dir, n, d) = (dir.clone(), name.clone(), digest.to_string());
                tokio::task::spawn_blocking(move || {
                    let sum = dir.join(format!("{n}.sha256"));
                    if dir.join(&n).exists() && !sum.exists() {
                        crate::connectors::file::write_checksum(&dir, &n, &d).map(|()| true)
                    } else {
                        Ok(false)
                    }
                })
                .await
                .map_err(|e| DeliveryError::Io(e.to_string()))?
                .map_err(|e| DeliveryError::Io(format!("{name}: {e}")))?
            }
            (Destination::Sftp { dir, .. }, Some(c)) => {
                crate::connectors::sftp::finish(c, dir, &name, digest)
                    .await
                    .map_err(|e| e.delivery())?
            }
            _ => false,
        };
        Ok(Delivered {
            status_code: None,
            excerpt: Some(format!(
                "already sent to {} (SHA-256 {digest}){}",
                self.bank.place(batch),
                if finished {
                    "; its checksum file written now"
                } else {
                    ""
                }
            )),
            response_sha256: None,
        })
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
        let resend = v["resend"].as_bool().unwrap_or(false);
        if let (Some(digest), false) = (&before, resend) {
            return self.finish(&batch, digest).await;
        }
        let same = |digest: &str| match &before {
            Some(before) if before != digest => Err(DeliveryError::Request(format!(
                "batch {id}: its file would differ from the one sent (SHA-256 {before}); not sent"
            ))),
            _ => Ok(()),
        };
        let name = self.bank.file_name(&batch);
        let failed = |e: String| DeliveryError::Io(format!("{name}: {e}"));
        match (&self.bank.dest, &self.upload) {
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
                self.store.mark_written(id, &digest).await.map_err(io)?;
                Ok(d)
            }
            (Destination::Dir(dir), None) => {
                // Rendered straight into a dot-file beside its place and
                // hashed as it goes (a file is never held in memory whole),
                // then put in place, recorded as sent, and its checksum
                // file after it (a retry after a crash in between only
                // writes the checksum file: `finish`).
                let tmp = crate::connectors::file::temp_path(dir, &name);
                let file = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::File::create(&tmp))
                    .map_err(|e| failed(e.to_string()))?;
                let (file, digest) = match self.render_into(&batch, file).await.and_then(|w| {
                    same(&w.1)?;
                    Ok(w)
                }) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                };
                let (d, n) = (dir.clone(), name.clone());
                tokio::task::spawn_blocking(move || crate::connectors::file::place(&d, &n, file))
                    .await
                    .map_err(|e| DeliveryError::Io(e.to_string()))?
                    .map_err(|e| failed(e.to_string()))?;
                self.store.mark_written(id, &digest).await.map_err(io)?;
                let (d, n, sum) = (dir.clone(), name.clone(), digest.clone());
                tokio::task::spawn_blocking(move || {
                    crate::connectors::file::write_checksum(&d, &n, &sum)
                })
                .await
                .map_err(|e| DeliveryError::Io(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
                Ok(Delivered {
                    status_code: None,
                    excerpt: Some(format!("written to {}", self.bank.place(&batch))),
                    response_sha256: None,
                })
            }
            (Destination::Sftp { dir, .. }, None) => {
                let client = self.sftp.as_ref().ok_or_else(|| {
                    DeliveryError::Request("no SFTP client for the bank's server".into())
                })?;
                // Rendered into an unnamed local file (gone with the
                // process), hashed as it goes, then streamed up.
                let file = tempfile::tempfile().map_err(|e| failed(e.to_string()))?;
                let (mut file, digest) = self.render_into(&batch, file).await?;
                same(&digest)?;
                use std::io::Seek;
                let len = file
                    .seek(std::io::SeekFrom::End(0))
                    .and_then(|len| file.rewind().map(|()| len))
                    .map_err(|e| failed(e.to_string()))?;
                let sftp = |e: crate::connectors::sftp::SftpError| e.delivery();
                crate::connectors::sftp::upload(
                    client,
                    dir,
                    &name,
                    tokio::fs::File::from_std(file),
                    len,
                )
                .await
                .map_err(sftp)?;
                self.store.mark_written(id, &digest).await.map_err(io)?;
                crate::connectors::sftp::place_checksum(client, dir, &name, &digest)
                    .await
                    .map_err(sftp)?;
                Ok(Delivered {
                    status_code: None,
                    excerpt: Some(format!(
                        "uploaded to {} ({len} bytes, SHA-256 {digest})",
                        self.bank.place(&batch)
                    )),
                    response_sha256: None,
                })
            }
            (Destination::Upload(u), None) => Err(DeliveryError::Request(format!(
                "no HTTP client for the upload to {u}"
            ))),
        }
    }

    /// Renders a batch's file into `file`, hashed as it goes: the file,
    /// flushed, and its SHA-256.
    async fn render_into(
        &self,
        batch: &BatchRow,
        file: std::fs::File,
    ) -> Result<(std::fs::File, String), DeliveryError> {
        let out =
            crate::connectors::file::Hashing::new(std::io::BufWriter::with_capacity(1 << 16, file));
        let out = render_to(&self.payouts, &*self.store, batch, &self.bank.format, out)
            .await
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let (w, digest) = out.finish();
        let file = w
            .into_inner()
            .map_err(|e| DeliveryError::Io(e.error().to_string()))?;
        Ok((file, digest))
    }
}

impl Sink for FilesSink {
    fn deliver<'a>(&'a self, m: &'a Claimed) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(self.send(m))
    }
}
