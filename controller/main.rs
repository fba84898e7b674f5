fn main() -> std::process::ExitCode {
    rollwatch::cli::main()
}
