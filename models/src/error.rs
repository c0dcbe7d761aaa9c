use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path} is not a valid model config: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("this model cannot run here: {0}")]
    Unsupported(String),

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("image: {0}")]
    Image(String),

    #[error("{0}")]
    Hub(String),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_owned(),
            error,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
