//! Ctrl-C for the commands that must finish what they started (`produce`, `consume`, and
//! `bench`, which must stop its embedded broker and remove its temporary directories): the
//! first one is remembered, for the command to stop at its next step and clean up; a second
//! one exits at once.

use tokio::sync::watch;

use crate::error::CliError;

/// Exit code of a process that a second Ctrl-C ended (128 + SIGINT, as a shell reports it).
const EXIT_AT_ONCE: i32 = 130;

/// Whether Ctrl-C was pressed; cheap to clone. The process's default Ctrl-C handling (exit
/// at once) is replaced for the rest of its life once one is [installed](Self::install).
#[derive(Debug, Clone)]
pub(crate) struct Interrupt {
    pressed: watch::Receiver<bool>,
}

impl Interrupt {
    /// Starts watching for Ctrl-C (on the current runtime). The handler is in place when this
    /// returns: a Ctrl-C from then on is never lost, whatever the command is doing.
    pub(crate) fn install() -> Result<Self, CliError> {
        let (tx, rx) = watch::channel(false);
        let mut signals = Signals::new()?;
        tokio::spawn(async move {
            if !signals.next().await {
                return;
            }
            let _ = tx.send(true);
            if signals.next().await {
                eprintln!("interrupted again: exiting at once");
                std::process::exit(EXIT_AT_ONCE);
            }
        });
        Ok(Self { pressed: rx })
    }

    /// Whether Ctrl-C was pressed.
    pub(crate) fn is_set(&self) -> bool {
        *self.pressed.borrow()
    }

    /// Resolves once Ctrl-C was pressed (at once if it already was).
    pub(crate) async fn wait(&self) {
        let mut pressed = self.pressed.clone();
        if pressed.wait_for(|p| *p).await.is_err() {
            // The watcher is gone (its signal stream ended): no Ctrl-C will be seen.
            std::future::pending::<()>().await;
        }
    }
}

/// SIGINT, registered at once (unlike `tokio::signal::ctrl_c`, which registers when first
/// polled).
#[cfg(unix)]
struct Signals(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Signals {
    fn new() -> Result<Self, CliError> {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map(Self)
            .map_err(|e| CliError::io("cannot handle Ctrl-C", e))
    }

    async fn next(&mut self) -> bool {
        self.0.recv().await.is_some()
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> Result<Self, CliError> {
        Ok(Self)
    }

    async fn next(&mut self) -> bool {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
