//! Everything provider-specific lives under this folder: wire formats, auth styles and
//! translations between API families.

pub mod openai;
pub mod sse;
