//! The `vigil` binary: the demo app on the settings given by flags (see `vigil --help`).

use std::io::Write;

use vigil::{LogFormat, Server, Settings};

fn main() {
    let settings = Settings::from_env_args_or_exit();
    init_logging(settings.log_format);
    let app = vigil::demo::app(settings.timeout);
    if let Err(e) = Server::serve(settings, app) {
        eprintln!("vigil: {e}");
        std::process::exit(1);
    }
}

/// `RUST_LOG` picks the levels (default `info`, may's own logs at `warn`); `--log-format json` writes one object per line.
fn init_logging(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"));
    if format == LogFormat::Json {
        b.format(|buf, rec| {
            let line = serde_json::json!({
                "ts": humantime_now(),
                "level": rec.level().as_str(),
                "target": rec.target(),
                "msg": rec.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    b.init();
}

fn humantime_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}
