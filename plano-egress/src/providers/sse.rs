//! The SSE decoder and encoder live in `plano-common` (the edge's output filters decode
//! streams too); this path keeps the egress's imports unchanged.

pub use plano_common::sse::*;
