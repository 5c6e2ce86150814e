use clap::Parser;

/// The default stack of threads that do not choose their own, lapin's I/O thread among them.
/// lapin (4.12, amq-protocol 10.6) decodes AMQP header tables by recursion in that thread,
/// and the sender chooses how deep they nest: with the usual 2 MiB, 1,000 nested tables (7 KB
/// of headers) aborted the daemon. A content header must fit one frame (128 KiB by default,
/// at most ~18,700 tables); 128 MiB holds that with room to spare. It is address space: pages
/// are only committed when a deep message really uses them.
const THREAD_STACK: &str = "134217728";

fn main() {
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        // SAFETY: no other thread exists yet (the runtime is built below), so nothing can
        // read the environment concurrently; std reads RUST_MIN_STACK at the first spawn.
        unsafe { std::env::set_var("RUST_MIN_STACK", THREAD_STACK) };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(runtime.block_on(run()));
}

async fn run() -> i32 {
    let cli = mailboxd::cli::Cli::parse();
    let level = cli.command.log_level();
    let format = cli.log_format;
    // The daemon's spans leave through the log subscriber, so `[telemetry]` is read first
    // (the other commands export nothing).
    let otlp = match &cli.command {
        mailboxd::cli::Command::Run => {
            Some(mailboxd::config::Telemetry::load(cli.config.as_deref()))
        }
        _ => None,
    };
    let started = match otlp.transpose() {
        Ok(otlp) => mailboxd::telemetry::init(format, level, otlp.as_ref()).map_err(Into::into),
        Err(e) => {
            let _ = mailboxd::telemetry::init(format, level, None);
            Err(anyhow::Error::from(e))
        }
    };
    let exporting = match started {
        Ok(exporting) => exporting,
        Err(e) => return failed(format, &e),
    };
    let code = match mailboxd::cli::main(cli).await {
        Ok(code) => code,
        Err(e) => failed(format, &e),
    };
    if let Some(exporting) = exporting {
        // Blocks until the queued spans are sent (or the export deadline passes).
        let _ = tokio::task::spawn_blocking(move || exporting.shutdown()).await;
    }
    code
}

/// Says why the command failed, and its exit code.
fn failed(format: mailboxd::telemetry::LogFormat, e: &anyhow::Error) -> i32 {
    // A log shipper reading JSON lines sees why the daemon would not start, too.
    match format {
        mailboxd::telemetry::LogFormat::Json => tracing::error!("{e:#}"),
        mailboxd::telemetry::LogFormat::Human => eprintln!("error: {e:#}"),
    }
    2
}
