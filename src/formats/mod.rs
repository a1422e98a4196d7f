//! Record encodings beyond JSON: XML documents (quick-xml), ISO 20022 payment files, bank file layouts.
//!
//! Layer 3: uses the schemas and diagnostics only.

pub mod layout;
pub mod pain;
pub mod xml;
