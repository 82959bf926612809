//! A foreground `run`/`exec` with a terminal and no console socket: copy between our stdio
//! and the pty master. Threads are fine here: every fork has already happened.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

pub struct Proxy {
    output: Option<JoinHandle<()>>,
    saved: Option<nix::sys::termios::Termios>,
}

impl Proxy {
    pub fn start(master: OwnedFd) -> Proxy {
        let saved = make_raw();
        let mut reader = std::fs::File::from(master);
        let mut writer = match reader.try_clone() {
            Ok(w) => w,
            Err(_) => {
                return Proxy {
                    output: None,
                    saved,
                }
            }
        };
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || writer.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let output = std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            let mut buf = [0u8; 4096];
            // EIO once every slave fd is closed: the container is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
        });
        Proxy {
            output: Some(output),
            saved,
        }
    }
}

fn make_raw() -> Option<nix::sys::termios::Termios> {
    let stdin = std::io::stdin();
    let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
    let mut raw = saved.clone();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
