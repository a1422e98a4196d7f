//! The deadline register on PostgreSQL.

use crate::store::postgres::*;
use crate::store::sql;
use crate::store::*;

fn stage_row(r: &tokio_postgres::Row) -> StageRow {
    StageRow {
        application_id: r.get(0),
        stage: r.get(1),
        stage_rank: i64::from(r.get::<_, i32>(2)),
        holder_id: r.get(3),
        office_region: r.get(4),
        entered_ms: r.get(5),
        due_ms: r.get(6),
        done_ms: r.get(7),
    }
}

impl PgStore {
    pub(in crate::store) async fn record_stages(
        &self,
        rows: Vec<StageRow>,
    ) -> Result<usize, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (mut app, mut stage, mut rank, mut holder, mut office, mut entered, mut due) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for r in &rows {
            app.push(r.application_id.as_str());
            stage.push(r.stage.as_str());
            rank.push(r.stage_rank as i32);
            holder.push(r.holder_id.as_str());
            office.push(r.office_region.as_str());
            entered.push(r.entered_ms);
            due.push(r.due_ms);
        }
        let n = tx
            .execute(
                "INSERT INTO case_stages (application_id, stage, stage_rank, holder_id, office_region, entered_ms, due_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                 ON CONFLICT (application_id, stage) DO NOTHING",
                &[&app, &stage, &rank, &holder, &office, &entered, &due],
            )
            .await?;
        let mut apps: Vec<&str> = app.clone();
        apps.sort_unstable();
        apps.dedup();
        let end = tx.prepare_cached(sql::END_EARLIER_STAGES.pg()).await?;
        for a in apps {
            tx.execute(&end, &[&a]).await?;
        }
        tx.commit().await?;
        Ok(n as usize)
    }

    pub(in crate::store) async fn open_stages_due_between(
        &self,
        from_ms: i64,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<StageRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                sql::OPEN_DUE_BETWEEN.pg(),
                &[&from_ms, &until_ms, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(stage_row).collect())
    }

    pub(in crate::store) async fn late_stages(
        &self,
        limit: usize,
    ) -> Result<Vec<StageRow>, StoreError> {
        let c = self.client().await?;
        let rows = c.query(sql::LATE.pg(), &[&(limit as i64)]).await?;
        Ok(rows.iter().map(stage_row).collect())
    }

    pub(in crate::store) async fn stage_counts(
        &self,
        now_ms: i64,
        soon_ms: i64,
    ) -> Result<Vec<StageCount>, StoreError> {
        let c = self.client().await?;
        let open = c
            .query(sql::OPEN_COUNTS.pg(), &[&now_ms, &soon_ms])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let late = c
            .query(sql::LATE_COUNTS.pg(), &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(merge_counts(open, late))
    }

    pub(in crate::store) async fn application_stages(
        &self,
        application_id: &str,
    ) -> Result<Vec<StageRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(sql::OF_APPLICATION.pg(), &[&application_id])
            .await?;
        Ok(rows.iter().map(stage_row).collect())
    }
}
