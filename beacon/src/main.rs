//! The `beacon` binary: one command, a role per subcommand.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    beacon::main()
}
