//! Submissions gathered per session. While one `submit.lua` call of a session is in flight,
//! the runs submitted to it meanwhile wait, and go together as its next call: a client
//! submitting many runs pays one call per batch, not per run, and a lone submission goes at
//! once (no timer). A task of its own sends each session's batches, so a caller that gives
//! up waiting (drops its future) abandons no other caller's run: a run handed over here is
//! sent, and its caller learns what became of it if it still listens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::client::{Accepted, Client, Outgoing};
use crate::{Error, SessionId};

/// The most runs one call carries.
const MOST_RUNS: usize = 512;

/// The most body bytes one call carries (a bigger run goes alone).
const MOST_BYTES: usize = 1 << 20;

/// A run waiting for its session's next call, and who awaits the answer.
struct Waiting {
    run: Outgoing,
    answer: oneshot::Sender<Result<Accepted, Error>>,
}

/// The runs waiting per session; a session is in the map exactly while its sender task runs.
#[derive(Default)]
pub(crate) struct Gathering {
    sessions: Mutex<HashMap<SessionId, Vec<Waiting>>>,
}

/// Sends `run` with the next call of `session` and waits for Redis' answer.
pub(crate) async fn send(
    client: &Arc<Client>,
    session: &SessionId,
    run: Outgoing,
) -> Result<Accepted, Error> {
    let (answer, answered) = oneshot::channel();
    let waiting = Waiting { run, answer };
    let start = {
        let mut sessions = client
            .gathering
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(session) {
            Some(queue) => {
                queue.push(waiting);
                false
            }
            None => {
                sessions.insert(session.clone(), vec![waiting]);
                true
            }
        }
    };
    if start {
        tokio::spawn(sender(Arc::clone(client), session.clone()));
    }
    answered.await.unwrap_or_else(|_| {
        Err(Error::unavailable(
            "am2z client",
            "the runtime stopped before the submission was answered",
        ))
    })
}

/// Sends `session`'s waiting runs, a batch per call, until none waits.
async fn sender(client: Arc<Client>, session: SessionId) {
    loop {
        let batch = {
            let mut sessions = client
                .gathering
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(queue) = sessions.get_mut(&session) else {
                return;
            };
            if queue.is_empty() {
                sessions.remove(&session);
                return;
            }
            let take = batch_len(queue.iter().map(|w| w.run.body.len()));
            queue.drain(..take).collect::<Vec<_>>()
        };
        let (runs, answers): (Vec<Outgoing>, Vec<_>) =
            batch.into_iter().map(|w| (w.run, w.answer)).unzip();
        match client.write(&session, None, &runs).await {
            Ok(written) => {
                let accepted = written.accepted(&runs, &client.config);
                for (answer, accepted) in answers.into_iter().zip(accepted) {
                    let _ = answer.send(accepted);
                }
            }
            Err(error) => {
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// How many of the runs waiting (their body sizes, in order) the next call takes: at least
/// one, at most [`MOST_RUNS`], and no more than [`MOST_BYTES`] of bodies past the first.
fn batch_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 0;
    let mut len = 0;
    for size in sizes.take(MOST_RUNS) {
        if len > 0 && bytes + size > MOST_BYTES {
            break;
        }
        bytes += size;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_bounded_in_runs_and_bytes_but_never_empty() {
        assert_eq!(batch_len([10; 1000].into_iter()), MOST_RUNS);
        assert_eq!(
            batch_len([MOST_BYTES * 3, 1].into_iter()),
            1,
            "a big run goes alone"
        );
        assert_eq!(batch_len([MOST_BYTES / 2; 5].into_iter()), 2);
        assert_eq!(batch_len(std::iter::empty()), 0);
    }
}
