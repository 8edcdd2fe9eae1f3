//! The `freshcache` binary: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    freshcache::cli::main()
}
