//! The `beacon` binary: one command, a role per subcommand.

fn main() -> std::process::ExitCode {
    beacon::main()
}
