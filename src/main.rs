use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = mailboxd::cli::Cli::parse();
    // The demo prints its own progress; its daemon only speaks up about problems.
    let level = match cli.command {
        mailboxd::cli::Command::Demo(_) => "warn",
        _ => "info",
    };
    mailboxd::telemetry::init(cli.log_format, level);
    match mailboxd::cli::main(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
