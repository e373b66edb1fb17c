use clap::Parser;
use tusker::config::{Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    let config = Config::from(args);
    let result = actix_web::rt::System::new().block_on(async move {
        let server = tusker::start(config).await?;
        server.wait().await.map_err(|e| e.to_string())?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tusker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
