//! `kind = "payout_register"`: the hub's own payout register as a target
//! of feeds. Its one kind of operation takes `PayoutHold` records (a death
//! registered by civil affairs or public security): the person's payments
//! from a month on are held in the register. The sink is the payout
//! module's (`payout::HoldsSink`); this module only reads the connector
//! file, as every kind does (`connectors` never imports `payout`).

pub mod settings;
