//! Record encodings beyond JSON: XML documents (quick-xml).

pub mod xml;
