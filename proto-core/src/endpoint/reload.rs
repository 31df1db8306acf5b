//! A server's policy replaced while it runs (a configuration reload): sessions the new
//! policy no longer admits end, streams it no longer allows are reset, and everything else
//! goes on untouched.

use crate::codes::SessionCode;
use crate::ids::{PeerId, StreamId};
use crate::policy::ServerPolicy;
use crate::target::Target;

use super::Endpoint;

/// What [`Endpoint::set_server_policy`] did to the live sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Sessions ended with [`SessionCode::Revoked`]: the new policy admits their peers no
    /// more (key removed, or the secret they proved changed or gone).
    pub revoked: Vec<PeerId>,
    /// Incoming streams reset with `TargetNotAllowed`: their targets are no longer allowed
    /// for their peers. Each also gets its `StreamReset` event.
    pub reset: Vec<(PeerId, StreamId, Target)>,
    /// Listeners closed (`ListenNotAllowed`): the new `listen` rules no longer allow their
    /// addresses. Each also gets its `ListenClosed` event.
    pub listeners_closed: Vec<(PeerId, u32, Target)>,
    /// UDP flows closed (`TargetNotAllowed`): the new `udp:` rules no longer allow their
    /// targets. Each also gets its `FlowClosed` event.
    pub flows_closed: Vec<(PeerId, u32, Target)>,
}

impl Endpoint {
    /// Replaces the server policy, as a reload of the server's configuration does.
    ///
    /// Each session this endpoint accepted is admitted again under `policy`
    /// ([`ServerPolicy::readmit`]): if it is not, it ends with CLOSE `Revoked` (1014) and
    /// `SessionClosed`; if it is, its incoming streams whose targets the new rules do not
    /// allow are reset with `TargetNotAllowed` (2001), and its other streams are
    /// untouched. New limits apply to sessions and streams opened from now on. Sessions
    /// this endpoint started (as a client) are not affected.
    pub fn set_server_policy(&mut self, policy: ServerPolicy) -> Reconfigured {
        let old = self.config.server.take().unwrap_or_default();
        let mut done = Reconfigured::default();
        let mut peers: Vec<PeerId> = self.sessions.keys().copied().collect();
        // Map order is seeded; a sorted walk keeps the outputs' order reproducible.
        peers.sort();
        for peer in peers {
            let Some(was) = self.sessions.get(&peer).and_then(|s| s.admission()) else {
                continue;
            };
            match policy.readmit(&peer, was, &old) {
                None => done.revoked.push(peer),
                Some(now_as) => {
                    let (sessions, mut ctx) = self.ctx();
                    let Some(s) = sessions.get_mut(&peer) else {
                        continue;
                    };
                    let reset = s.readmit(now_as, &policy, &mut ctx);
                    let closed = s.recheck_listeners(&policy, &mut ctx);
                    let flows = s.recheck_flows(&policy, &mut ctx);
                    let touched = !(reset.is_empty() && closed.is_empty() && flows.is_empty());
                    done.listeners_closed
                        .extend(closed.into_iter().map(|(id, b)| (peer, id, b)));
                    done.flows_closed
                        .extend(flows.into_iter().map(|(id, t)| (peer, id, t)));
                    if touched {
                        self.mark_ready(peer);
                    }
                    done.reset
                        .extend(reset.into_iter().map(|(id, t)| (peer, id, t)));
                }
            }
        }
        self.config.server = Some(policy);
        for peer in &done.revoked {
            self.close(*peer, SessionCode::Revoked);
        }
        done
    }
}
