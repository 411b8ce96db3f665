//! What this process does with each message of the runtime's channels (`wake`, `done`,
//! `control`, `events`): every message is read as its channel's type (`protocol::messages`);
//! one that does not read is logged and ignored.

use std::sync::Arc;

use super::claimer::Wakeups;
use super::client::Client;
use super::keys::{Channel, Keys};
use super::leases::LeaseTable;
use super::protocol::Redis;
use super::protocol::messages::{self, Control, Done, Wake};
use super::stops::Stops;
use super::watches::Watches;
use super::worker::Contention;
use crate::event::EventBus;
use crate::{Event, LocalRuntime, Runtime};

/// Everything a message can reach.
pub(crate) struct Listener {
    pub(crate) redis: Arc<Redis>,
    pub(crate) keys: Keys,
    pub(crate) events: EventBus,
    pub(crate) client: Arc<Client>,
    pub(crate) leases: Arc<LeaseTable>,
    pub(crate) stops: Arc<Stops>,
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) contention: Arc<Contention>,
    pub(crate) watches: Arc<Watches>,
    pub(crate) engine: LocalRuntime,
}

impl Listener {
    /// Handles a message from one of the runtime's channels.
    pub(crate) fn on_message(self: &Arc<Self>, name: &str, payload: &[u8]) {
        let channel = self.keys.channel(name);
        // No subscriber in this process: nothing to read (a busy worker hears every batch of
        // the prefix; decoding them was a quarter of its instructions).
        if channel == Some(Channel::Events) && !self.events.is_observed() {
            return;
        }
        let Ok(payload) = std::str::from_utf8(payload) else {
            tracing::debug!("a message that is not UTF-8 ignored");
            return;
        };
        match channel {
            Some(Channel::Events) => self.on_events(payload),
            Some(Channel::Wake) => match payload.parse::<Wake>() {
                Ok(wake) => {
                    // Another session got ready jobs: hand-offs yield to the fair order now.
                    self.contention.woken();
                    self.wakeups.wake(Some(wake.session));
                }
                Err(error) => tracing::debug!(%error, "ignored"),
            },
            Some(Channel::Done) => {
                for done in Done::read_all(payload) {
                    match done {
                        Ok(done) => self.on_done(done),
                        Err(error) => tracing::debug!(%error, "ignored"),
                    }
                }
            }
            Some(Channel::Control) => match payload.parse::<Control>() {
                Ok(control) => self.on_control(control),
                Err(error) => tracing::debug!(%error, "ignored"),
            },
            None => tracing::debug!(channel = name, "a message on an unknown channel ignored"),
        }
    }

    /// After the subscription was re-established: messages may have been missed.
    pub(crate) fn on_reconnect(&self) {
        self.client.waiters.wake_all();
        self.client.forget_registrations();
        self.watches.forget_all();
        self.contention.woken();
        self.wakeups.wake(None);
    }

    fn on_events(&self, payload: &str) {
        // A worker's batch (a JSON array), or one event published by the runtime itself.
        if payload.starts_with('[') {
            match serde_json::from_str::<Vec<Event>>(payload) {
                Ok(events) => events.into_iter().for_each(|e| self.events.publish(e)),
                Err(error) => tracing::debug!(%error, "undecodable events ignored"),
            }
        } else {
            match serde_json::from_str::<Event>(payload) {
                Ok(event) => self.events.publish(event),
                Err(error) => tracing::debug!(%error, "undecodable event ignored"),
            }
        }
    }

    fn on_done(&self, done: Done) {
        if self.leases.holds_entry(&done.session, done.run) {
            // Executed here: its worker hands the typed outcome over itself.
            return;
        }
        let waiters = &self.client.waiters;
        if let Some(outcome) = done.outcome {
            waiters.deliver(&done.session, done.run, outcome);
        }
        waiters.done(&done.session, done.run);
    }

    fn on_control(self: &Arc<Self>, control: Control) {
        match control {
            Control::Stopped { nonce } => self.stops.answered(&nonce),
            Control::Expired { session } => {
                self.engine.forget_idle_session(&session);
                self.client.forget_registration(&session);
                self.client.subscriptions.release(&session);
                self.watches.forget(&session);
                // Its waiters read again: they end with `SessionStopped` or find a new run.
                self.client.waiters.wake_all();
            }
            Control::Cancel {
                session,
                run,
                instance,
            } => {
                self.leases.cancel(&session, run, instance.as_deref());
            }
            Control::Abort { session, run } => {
                self.leases.abort(&session, run);
            }
            Control::Stop { session, nonce } => {
                self.stops.heard(&session);
                self.client.waiters.session_stopped(&session);
                self.client.forget_registration(&session);
                self.client.subscriptions.release(&session);
                self.watches.forget(&session);
                let listener = Arc::clone(self);
                tokio::spawn(async move {
                    let _ = listener.engine.stop_session(&session).await;
                    if let Some(nonce) = nonce {
                        let answer = Control::Stopped { nonce };
                        let channel = listener.keys.control_channel();
                        if let Err(error) =
                            messages::publish(&listener.redis, &channel, &answer).await
                        {
                            tracing::debug!(error = %error.into_error(&listener.redis.errors), "answering a stop failed");
                        }
                    }
                });
            }
        }
    }
}
