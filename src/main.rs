fn main() {
    std::process::exit(syncmount::cli::main());
}
