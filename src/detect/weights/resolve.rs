//! Finding weights for `--model NAME`: `models/`, `$LOOKOUT_MODELS`, the Hugging Face
//! cache, then a download when allowed.
