use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = mailboxd::cli::Cli::parse();
    let level = cli.command.log_level();
    let format = cli.log_format;
    mailboxd::telemetry::init(format, level);
    match mailboxd::cli::main(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // A log shipper reading JSON lines sees why the daemon would not start, too.
            match format {
                mailboxd::telemetry::LogFormat::Json => tracing::error!("{e:#}"),
                mailboxd::telemetry::LogFormat::Human => eprintln!("error: {e:#}"),
            }
            std::process::exit(2);
        }
    }
}
