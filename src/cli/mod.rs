//! The command line: raw flags parsed by clap, validated once into typed configs.

pub fn main() -> anyhow::Result<()> {
    Ok(())
}
