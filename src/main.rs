use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = mailboxd::cli::Cli::parse();
    mailboxd::telemetry::init(cli.log_format);
    match mailboxd::cli::main(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
