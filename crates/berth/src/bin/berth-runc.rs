fn main() {
    std::process::exit(berth_cli::runc::main(std::env::args_os()));
}
