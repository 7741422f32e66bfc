//! Checking an access token presented on a device-facing route, pure, for
//! every backend. The backend supplies what only it knows (its signing
//! keys, its registry and revocations, as closures or a
//! [`RevocationSet`]); the order, the rights and the words are these.
//!
//! 1. [`Presented::parse`]: bounded, then a caveat chain (if any) verifies
//!    against the root before anything else is read.
//! 2. The backend verifies the token's signature and claims.
//! 3. [`check_lineage`]: neither the token nor an ancestor is revoked, every
//!    ancestor agent is still at its generation, the token's agent is; then
//!    the rights ([`rights_of`]: the token's scope, narrowed by the caveats
//!    it inherited and the chain's), and the named sub-agents exist, are not
//!    revoked and narrow the grants. Revocation comes first: a revoked
//!    token is told so (and its instance stopped) whatever its chain says.
//! 5. [`check_users`]: every agent acting for a user is one its issuer
//!    lists.

use crate::caveat::{Caveat, CaveatError, Rights, UnverifiedChain};
use crate::grant::GrantName;
use crate::problem::{ProblemClass, Refusal};
use crate::revocation::RevocationSet;
use crate::token::{TokenError, VerifiedToken};

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// Not a valid token (signature, issuer, audience, time...).
    #[error("{0}")]
    Token(#[from] TokenError),
    /// Valid, but revoked (or the state to tell is unavailable: closed).
    #[error("revoked: {0}")]
    Revoked(String),
    /// An attenuated token whose caveat chain does not verify or leaves no
    /// valid rights.
    #[error("delegation: {0}")]
    Chain(#[from] CaveatError),
    /// The backend cannot tell now (its registry or revocation state is
    /// unavailable): refused, but not a revocation, so no stop order.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl AccessError {
    /// How the refusal reaches the guest.
    pub fn refusal(&self) -> Refusal {
        match self {
            AccessError::Revoked(reason) => Refusal::new(ProblemClass::Revoked, reason.clone()),
            AccessError::Chain(e) => {
                Refusal::denied(format!("the delegation chain is refused: {e}"))
                    .with_status(http::StatusCode::UNAUTHORIZED)
            }
            AccessError::Token(TokenError::Expired) => {
                Refusal::new(ProblemClass::Expired, "the instance's access token expired")
            }
            AccessError::Token(_) => Refusal::denied("the instance's access token is not valid")
                .with_status(http::StatusCode::UNAUTHORIZED),
            // The cause is the backend's own (a store error): not shown.
            AccessError::Unavailable(_) => {
                Refusal::upstream("the backend cannot check the access token now; try again")
                    .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

/// A presented token: the access token, and the caveats of the chain it
/// came in (none for a bare token), verified. Its `Debug` shows the
/// caveats, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    /// The access token (still to be verified by the caller).
    pub token: &'a str,
    /// The chain's caveats, verified against the root.
    pub caveats: Vec<Caveat>,
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("token", &"[REDACTED]")
            .field("caveats", &self.caveats)
            .finish()
    }
}

impl<'a> Presented<'a> {
    /// Bound the presented text, then verify its chain (if any) against
    /// `root`.
    pub fn parse(presented: &'a str, root: &[u8; 32]) -> Result<Presented<'a>, AccessError> {
        if presented.len() > crate::caveat::MAX_PRESENTED_LEN {
            return Err(AccessError::Token(TokenError::TooLong {
                len: presented.len(),
                max: crate::caveat::MAX_PRESENTED_LEN,
            }));
        }
        if !presented.contains(crate::caveat::SEPARATOR) {
            return Ok(Presented {
                token: presented,
                caveats: Vec::new(),
            });
        }
        let unverified = UnverifiedChain::parse(presented)?;
        // The token is a prefix of the presented text: borrow it from there.
        let token_len = unverified.token().len();
        let chain = unverified.verify(root)?;
        Ok(Presented {
            token: &presented[..token_len],
            caveats: chain.caveats().to_vec(),
        })
    }
}

/// What a verified token may do: its scope, narrowed by the caveats it
/// inherited (a delegated child's), then by the chain's. The token's own
/// expiry was checked with the clock tolerance; only `exp` caveats bound
/// the rights in time.
pub fn rights_of(token: &VerifiedToken, caveats: &[Caveat]) -> Result<Rights, CaveatError> {
    Rights::of_token(
        token.scope(),
        u64::MAX,
        token.jkt(),
        crate::caveat::MAX_DELEGATION_DEPTH,
    )
    .attenuate(token.inherited_caveats())?
    .attenuate(caveats)
}

/// An agent as the registry has it now, for [`check_lineage`].
#[derive(Debug, Clone)]
pub struct LiveAgent<'a> {
    /// Its current generation.
    pub generation: u64,
    /// The grants it holds (borrowed from a config, or a registry record's).
    pub grants: std::borrow::Cow<'a, [GrantName]>,
}

/// What a token that passed [`check_lineage`] may do, and the registry
/// generation of the agent acting with it (the last sub-agent its chain
/// names, else the token's agent): an approval is bound to that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The rights.
    pub rights: Rights,
    /// The acting agent's generation.
    pub acting_generation: u64,
}

/// The revocation and registry checks of a token, and what it may do: the
/// token itself, each ancestor (its revocations, and its agent still at the
/// generation it had), the token's agent at the token's generation; then
/// its rights under `caveats` (the presented chain's), and each sub-agent
/// they name (registered, not revoked; the rights keep only grants every
/// one of them holds). `agent` looks an agent up (`Ok(None)`: not
/// registered; `Err`: the registry is unavailable, and the check fails
/// closed with that error).
pub fn check_lineage<'r>(
    token: &VerifiedToken,
    caveats: &[Caveat],
    revoked: &RevocationSet,
    mut agent: impl FnMut(&str) -> Result<Option<LiveAgent<'r>>, AccessError>,
) -> Result<Checked, AccessError> {
    if let Some(reason) = revoked.check(token) {
        return Err(AccessError::Revoked(reason));
    }
    // A delegated child's token dies with any of its ancestors: their
    // revocations, and the registry (an ancestor agent re-issued or
    // deprovisioned; generation bumps are not all revocations).
    for a in token.ancestors() {
        if let Some(reason) = revoked.check_ancestor(a) {
            return Err(AccessError::Revoked(format!(
                "delegated by a revoked token: {reason}"
            )));
        }
        match agent(&a.agent)? {
            Some(r) if r.generation == a.generation => {}
            _ => {
                return Err(AccessError::Revoked(format!(
                    "delegated by agent {} at generation {}, which it no longer is",
                    a.agent, a.generation
                )));
            }
        }
    }
    match agent(token.agent())? {
        Some(r) if r.generation == token.generation() => {}
        Some(r) => {
            return Err(AccessError::Revoked(format!(
                "agent {} is at generation {}; this token is of generation {}",
                token.agent(),
                r.generation,
                token.generation()
            )));
        }
        None => {
            return Err(AccessError::Revoked(format!(
                "agent {} no longer exists",
                token.agent()
            )));
        }
    }
    let mut rights = rights_of(token, caveats)?;
    let mut acting_generation = token.generation();
    // A chain naming sub-agents holds at most what each of them holds now,
    // and nothing while one is unknown or revoked: a parent cannot lend
    // its rights to an agent nobody registered.
    for name in rights.agents.clone() {
        let Some(sub) = agent(&name)? else {
            return Err(AccessError::Revoked(format!(
                "sub-agent {name} is not registered"
            )));
        };
        if let Some(reason) = revoked.refuses_agent(&name, sub.generation) {
            return Err(AccessError::Revoked(format!("sub-agent {name}: {reason}")));
        }
        rights.grants.retain(|g| sub.grants.contains(g));
        acting_generation = sub.generation;
    }
    Ok(Checked {
        rights,
        acting_generation,
    })
}

/// Every agent acting for a user (the token's, its ancestors', the chain's
/// sub-agents) must be one the user's issuer lists: checked on every call,
/// the list may shrink.
pub fn check_users(
    issuers: &[crate::user::UserIssuer],
    token: &VerifiedToken,
    rights: &Rights,
) -> Result<(), AccessError> {
    let Some(user) = token.on_behalf_of() else {
        return Ok(());
    };
    for agent in std::iter::once(token.agent())
        .chain(token.ancestors().iter().map(|a| a.agent.as_str()))
        .chain(rights.agents.iter().map(String::as_str))
    {
        crate::user::may_act_for(issuers, agent, user).map_err(AccessError::Revoked)?;
    }
    Ok(())
}

/// The names a token's revocation check needs, for a backend that fetches
/// only the revocations that could concern it: `(jtis, instances, agents,
/// devices)` of the token, its ancestors and the sub-agents its inherited
/// caveats and `caveats` (the presented chain's) name.
pub fn revocation_names<'t>(token: &'t VerifiedToken, caveats: &'t [Caveat]) -> [Vec<&'t str>; 4] {
    let segment = crate::crossing::spiffe_segment;
    let mut jtis = vec![token.jti()];
    let mut instances = vec![segment(token.instance(), "/instance/").unwrap_or("")];
    let mut devices = vec![segment(token.device(), "/device/").unwrap_or("")];
    let mut agents = vec![token.agent()];
    for a in token.ancestors() {
        jtis.push(&a.jti);
        instances.push(segment(&a.instance_spiffe, "/instance/").unwrap_or(""));
        devices.push(segment(&a.device_spiffe, "/device/").unwrap_or(""));
        agents.push(&a.agent);
    }
    agents.extend(
        token
            .inherited_caveats()
            .iter()
            .chain(caveats)
            .filter_map(|c| match c {
                Caveat::Agent(name) => Some(name.as_str()),
                _ => None,
            }),
    );
    [jtis, instances, agents, devices]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::{Chain, ChainKey};
    use crate::revocation::RevocationKind;
    use crate::token::{Mint, TokenIssuer, TokenVerifier};
    use std::borrow::Cow;

    const NOW: u64 = 1_767_225_600;

    fn token() -> (String, VerifiedToken) {
        let issuer = TokenIssuer::new(&[9; 32], "https://b.test", "aud").expect("issuer");
        let jwt = issuer
            .mint(&Mint {
                sub: "spiffe://td/agent/bot/instance/i1".into(),
                instance_spiffe: "spiffe://td/agent/bot/instance/i1".into(),
                device_spiffe: "spiffe://td/device/dev-1".into(),
                agent: "bot".into(),
                scope: vec![
                    GrantName::new("a").expect("a"),
                    GrantName::new("b").expect("b"),
                ],
                generation: 2,
                jkt: "holder".into(),
                now: NOW,
                lifetime: 60,
                jti: "t1".into(),
            })
            .expect("mint");
        let mut verifier = TokenVerifier::new("https://b.test", "aud", 5);
        verifier.add_key(issuer.kid(), issuer.public_key());
        let verified = verifier.verify(&jwt, NOW).expect("verify");
        (jwt, verified)
    }

    fn grants(names: &[&str]) -> Vec<GrantName> {
        names
            .iter()
            .map(|g| GrantName::new(g).expect("grant"))
            .collect()
    }

    #[test]
    fn presented_tokens_are_bounded_and_chains_verify_before_anything_else() {
        let root = [1u8; 32];
        let (jwt, _) = token();
        let bare = Presented::parse(&jwt, &root).expect("bare");
        assert_eq!((bare.token, bare.caveats.len()), (jwt.as_str(), 0));
        let key = ChainKey::derive(&root, &jwt);
        let chain = Chain::new(jwt.clone(), key)
            .append(Caveat::grants(grants(&["a"])))
            .expect("caveat");
        let wire = chain.encode();
        let narrowed = Presented::parse(&wire, &root).expect("chain");
        assert_eq!((narrowed.token, narrowed.caveats.len()), (jwt.as_str(), 1));
        assert!(matches!(
            Presented::parse(&wire, &[2u8; 32]),
            Err(AccessError::Chain(CaveatError::BadTag))
        ));
        let long = "x".repeat(crate::caveat::MAX_PRESENTED_LEN + 1);
        assert!(matches!(
            Presented::parse(&long, &root),
            Err(AccessError::Token(TokenError::TooLong { .. }))
        ));
    }

    #[test]
    fn lineage_checks_revocations_generations_and_sub_agents() {
        let (_, t) = token();
        let held = grants(&["b"]);
        let registry = |generation: u64| {
            let held = held.clone();
            move |name: &str| -> Result<Option<LiveAgent<'static>>, AccessError> {
                Ok(match name {
                    "bot" => Some(LiveAgent {
                        generation,
                        grants: Cow::Owned(grants(&["a", "b"])),
                    }),
                    "sub" => Some(LiveAgent {
                        generation: 1,
                        grants: Cow::Owned(held.clone()),
                    }),
                    _ => None,
                })
            }
        };
        let none = RevocationSet::default();
        let checked = check_lineage(&t, &[], &none, registry(2)).expect("live");
        assert_eq!(checked.rights.grants, grants(&["a", "b"]));
        assert_eq!(checked.acting_generation, 2);
        let e = check_lineage(&t, &[], &none, registry(3)).expect_err("moved");
        assert_eq!(
            e,
            AccessError::Revoked(
                "agent bot is at generation 3; this token is of generation 2".into()
            )
        );
        let mut revoked = RevocationSet::default();
        revoked.add(&RevocationKind::Instance { id: "i1".into() });
        let e = check_lineage(&t, &[], &revoked, registry(2)).expect_err("instance");
        assert_eq!(e, AccessError::Revoked("instance i1 was revoked".into()));
        assert_eq!(e.refusal().class, ProblemClass::Revoked);
        // A chain naming a sub-agent keeps only what the sub-agent holds;
        // an unregistered one holds nothing.
        let sub = [Caveat::Agent("sub".into())];
        let checked = check_lineage(&t, &sub, &none, registry(2)).expect("sub-agent");
        assert_eq!(checked.rights.grants, held);
        assert_eq!(checked.acting_generation, 1, "the sub-agent's");
        let ghost = [Caveat::Agent("ghost".into())];
        let e = check_lineage(&t, &ghost, &none, registry(2)).expect_err("ghost");
        assert_eq!(
            e,
            AccessError::Revoked("sub-agent ghost is not registered".into())
        );
        let mut revoked = RevocationSet::default();
        revoked.add(&RevocationKind::Agent {
            name: "sub".into(),
            before_generation: None,
        });
        let e = check_lineage(&t, &sub, &revoked, registry(2)).expect_err("revoked sub");
        assert_eq!(
            e,
            AccessError::Revoked("sub-agent sub: agent sub was revoked".into())
        );
        // Revocation before the chain: a revoked token with a chain that
        // leaves nothing is told it is revoked.
        let mut revoked = RevocationSet::default();
        revoked.add(&RevocationKind::Token { jti: "t1".into() });
        let too_deep: Vec<Caveat> = ["a", "b", "c", "d"]
            .iter()
            .map(|h| Caveat::Holder((*h).into()))
            .collect();
        assert!(
            rights_of(&t, &too_deep).is_err(),
            "the chain alone is refused"
        );
        let e = check_lineage(&t, &too_deep, &revoked, registry(2)).expect_err("revoked");
        assert_eq!(e, AccessError::Revoked("token t1 was revoked".into()));
        // The names a backend must fetch revocations for.
        let [jtis, instances, agents, devices] = revocation_names(&t, &sub);
        assert_eq!(
            (jtis, instances, devices),
            (vec!["t1"], vec!["i1"], vec!["dev-1"])
        );
        assert_eq!(agents, vec!["bot", "sub"]);
    }

    #[test]
    fn refusals_keep_their_classes() {
        let expired = AccessError::Token(TokenError::Expired).refusal();
        assert_eq!(expired.class, ProblemClass::Expired);
        let bad = AccessError::Token(TokenError::UnknownKey).refusal();
        assert_eq!(
            (bad.class, bad.status.as_u16()),
            (ProblemClass::Denied, 401)
        );
        let chain = AccessError::Chain(CaveatError::BadTag).refusal();
        assert_eq!(
            (chain.class, chain.status.as_u16()),
            (ProblemClass::Denied, 401)
        );
    }
}
