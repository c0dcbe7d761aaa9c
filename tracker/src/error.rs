use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error(transparent)]
    Decode(#[from] owltrack_decoder::DecodeError),

    #[error(transparent)]
    Model(#[from] owltrack_models::ModelError),
}

impl TrackerError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        TrackerError::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// Reads and parses a JSON file; a parse error says `what` was expected.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrackerError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrackerError::Format {
        path: path.to_owned(),
        reason: format!("not {what}: {e}"),
    })
}

pub type Result<T, E = TrackerError> = std::result::Result<T, E>;
