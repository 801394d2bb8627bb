//! Join-token verification: the token must exist and be unexpired; it is
//! consumed when the agent is recorded.

use super::{AttestError, Challenger, NodeIdentity, NodeVerifier};
use crate::datastore::Datastore;
use tessera_attestors::node::join_token;
use tessera_common::{Selector, TrustDomain, UnixTime};

pub struct JoinTokenVerifier {
    pub datastore: Datastore,
    pub trust_domain: TrustDomain,
}

#[async_trait::async_trait]
impl NodeVerifier for JoinTokenVerifier {
    fn method(&self) -> &'static str {
        join_token::METHOD
    }

    async fn attest(
        &self,
        payload: &[u8],
        _: &mut dyn Challenger,
    ) -> Result<NodeIdentity, AttestError> {
        let token =
            join_token::parse(payload).map_err(|e| AttestError::Malformed(e.to_string()))?;
        if !self
            .datastore
            .join_token_valid(token, UnixTime::now())
            .await?
        {
            return Err(AttestError::Rejected(
                "join token is unknown, used or expired".into(),
            ));
        }
        let agent_id = self
            .trust_domain
            .id(&join_token::agent_path(token))
            .map_err(|e| AttestError::Malformed(e.to_string()))?;
        Ok(NodeIdentity {
            agent_id,
            selectors: vec![Selector::new("tessera", "node_attestor:join_token")],
            consume_token: Some(token.to_string()),
            detail: String::new(),
        })
    }
}
