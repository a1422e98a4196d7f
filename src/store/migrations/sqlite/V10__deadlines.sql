-- The deadline register: each stage each certificate application has
-- entered, when, when it is due (the end of its last working day, ms) and
-- when the next stage came. Open stages are found by their due time.
CREATE TABLE case_stages (
    application_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    -- The stage's place in the order of stages: of two stages entered at
    -- the same instant, the later in this order ends the earlier.
    stage_rank INTEGER NOT NULL,
    holder_id TEXT NOT NULL,
    office_region TEXT NOT NULL,
    entered_ms INTEGER NOT NULL,
    due_ms INTEGER,
    done_ms INTEGER,
    PRIMARY KEY (application_id, stage)
);
CREATE INDEX case_stages_open ON case_stages (due_ms) WHERE done_ms IS NULL AND due_ms IS NOT NULL;
CREATE INDEX case_stages_late ON case_stages (done_ms) WHERE done_ms > due_ms;
