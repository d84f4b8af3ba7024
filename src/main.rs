fn main() -> std::process::ExitCode {
    shapewise::cli::run()
}
