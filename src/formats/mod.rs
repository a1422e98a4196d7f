//! Record encodings beyond JSON: XML documents (quick-xml), ISO 20022 payment files, bank file layouts.

pub mod layout;
pub mod pain;
pub mod xml;
