use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_models::{Checkpoint, DType};

#[derive(Args)]
pub struct ExportArgs {
    /// Checkpoint folder (hub layout) or hub id.
    pub model: String,
    /// Folder to write the copy to.
    #[arg(long)]
    pub out: PathBuf,
    /// Storage format of the weights: f16 (half the size), bf16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => bail!("unknown dtype {other:?}: use f16, bf16 or f32"),
    };
    let checkpoint = Checkpoint::locate(&args.model)?;
    if checkpoint.dir.canonicalize().ok() == args.out.canonicalize().ok() {
        bail!("--out is the checkpoint's own folder; write the copy elsewhere");
    }
    let tensors = checkpoint
        .export(&args.out, dtype)
        .with_context(|| format!("cannot export {} to {}", args.model, args.out.display()))?;
    eprintln!(
        "wrote {tensors} tensors as {} to {}",
        args.dtype,
        args.out.display()
    );
    Ok(())
}
