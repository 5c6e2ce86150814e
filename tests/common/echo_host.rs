//! A WinRS command host for protocol tests: `slow` answers after 2.5 s, anything else
//! echoes its stdin on stdout and stderr and exits 7.

use lab::wsman::{CommandHost, Launch, Logon, ProcessOutput};

pub struct EchoHost;

impl CommandHost for EchoHost {
    fn launch(&self, _logon: &Logon, command: &str, _args: &[String]) -> Launch {
        if command == "slow" {
            return Launch::AwaitStdin(Box::new(|_| {
                Box::pin(async {
                    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
                    ProcessOutput {
                        stdout: b"late\r\n".to_vec(),
                        stderr: vec![],
                        exit_code: 0,
                    }
                })
            }));
        }
        Launch::AwaitStdin(Box::new(|stdin| {
            Box::pin(async move {
                ProcessOutput {
                    stdout: stdin.clone(),
                    stderr: stdin,
                    exit_code: 7,
                }
            })
        }))
    }
}
