//! The deadline register on SQLite.

use crate::store::sql;
use crate::store::sqlite::*;
use crate::store::*;

fn stage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StageRow> {
    Ok(StageRow {
        application_id: r.get(0)?,
        stage: r.get(1)?,
        stage_rank: r.get(2)?,
        holder_id: r.get(3)?,
        office_region: r.get(4)?,
        entered_ms: r.get(5)?,
        due_ms: r.get(6)?,
        done_ms: r.get(7)?,
    })
}

impl SqliteStore {
    pub(in crate::store) async fn record_stages(
        &self,
        rows: Vec<StageRow>,
    ) -> Result<usize, StoreError> {
        self.with(move |c| {
            let mut n = 0;
            let mut apps = std::collections::BTreeSet::new();
            {
                let mut st = c.prepare_cached(sql::INSERT_STAGE.sqlite())?;
                for r in &rows {
                    n += st.execute(rusqlite::params![
                        r.application_id,
                        r.stage,
                        r.stage_rank,
                        r.holder_id,
                        r.office_region,
                        r.entered_ms,
                        r.due_ms
                    ])?;
                    apps.insert(r.application_id.as_str());
                }
            }
            let mut st = c.prepare_cached(sql::END_EARLIER_STAGES.sqlite())?;
            for a in apps {
                st.execute([a])?;
            }
            Ok(n)
        })
        .await
    }

    pub(in crate::store) async fn open_stages_due_between(
        &self,
        from_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<StageRow>, StoreError> {
        self.with(move |c| {
            all(
                c,
                sql::OPEN_DUE_BETWEEN.sqlite(),
                rusqlite::params![from_ms, until_ms, limit as i64],
                stage_row,
            )
        })
        .await
    }

    pub(in crate::store) async fn late_stages(
        &self,
        limit: usize,
    ) -> Result<Vec<StageRow>, StoreError> {
        self.with(move |c| all(c, sql::LATE.sqlite(), [limit as i64], stage_row))
            .await
    }

    pub(in crate::store) async fn stage_counts(
        &self,
        now_ms: i64,
        soon_ms: i64,
    ) -> Result<Vec<StageCount>, StoreError> {
        self.with(move |c| {
            let open = all(c, sql::OPEN_COUNTS.sqlite(), [now_ms, soon_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            let late = all(c, sql::LATE_COUNTS.sqlite(), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(merge_counts(open, late))
        })
        .await
    }

    pub(in crate::store) async fn application_stages(
        &self,
        application_id: &str,
    ) -> Result<Vec<StageRow>, StoreError> {
        let a = application_id.to_string();
        self.with(move |c| all(c, sql::OF_APPLICATION.sqlite(), [&a], stage_row))
            .await
    }
}
