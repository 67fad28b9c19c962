fn main() -> anyhow::Result<()> {
    lookout::cli::main()
}
