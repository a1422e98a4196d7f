//! Record encodings beyond JSON: XML documents (quick-xml).

pub mod pain;
pub mod xml;
