//! Prompt listeners end to end.
