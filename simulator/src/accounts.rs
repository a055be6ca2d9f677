//! AWS accounts: who a caller is (from the access key id of its SigV4 signature), the
//! credentials STS AssumeRole issues, and the organization's members. Pure logic and state,
//! no I/O: [`crate::rpc`] renders it on the wire.
//!
//! A caller is the "home" account ([`SimConfig::account_id`]) unless its access key id is one
//! this simulator issued through AssumeRole; then it is the account of the role it assumed
//! until the key expires. Signatures are not verified.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rng::{mix64, SplitMix64};
use crate::SimConfig;

/// Upper-case letters and digits 2-7, the alphabet of AWS access key ids.
const KEY_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// What the simulator remembers of credentials it issued.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    pub account: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`.
    pub assumed_arn: String,
    /// Wall clock, epoch milliseconds (a whole second): the key is rejected from then on.
    pub expires_ms: u64,
}

/// Who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub account: String,
    /// The principal, for error messages: the assumed-role ARN, or the home account's root.
    pub arn: String,
    /// The credentials were issued by this simulator's AssumeRole.
    pub assumed: bool,
    /// Issued credentials past their expiration.
    pub expired: bool,
}

/// Issued credentials and denied roles.
#[derive(Default)]
pub(crate) struct Identities {
    issued: HashMap<String, Issued>,
    /// Accounts whose roles AssumeRole refuses.
    denied: BTreeSet<String>,
    seq: u64,
}

/// The parameters of one AssumeRole call, not yet validated.
#[derive(Clone, Debug, Default)]
pub(crate) struct AssumeRoleInput {
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub external_id: Option<String>,
    pub duration_seconds: Option<String>,
}

/// Credentials granted by AssumeRole.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires_ms: u64,
    pub assumed_role_id: String,
    pub assumed_arn: String,
    pub account: String,
}

/// Why AssumeRole refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StsError {
    /// `400 ValidationError`.
    Validation(String),
    /// `403 AccessDenied`, naming the caller and the role.
    AccessDenied { message: String },
}

/// One member of the organization, as ListAccounts returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub id: String,
    pub arn: String,
    pub email: String,
    pub name: String,
    /// `ACTIVE` or `SUSPENDED` (both `Status` and `State`).
    pub status: &'static str,
    /// Epoch seconds.
    pub joined_secs: i64,
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An ISO 8601 UTC timestamp with whole seconds, as STS writes `Expiration`.
pub(crate) fn iso8601(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Twelve ASCII digits.
pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:...`).
pub(crate) fn arn_account(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

/// The access key id a request was signed with: `Credential=AKID/DATE/REGION/SERVICE/...`.
pub(crate) fn signed_access_key(authorization: &str) -> Option<&str> {
    let cred = authorization.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    cred.split('/').next().filter(|k| !k.is_empty())
}

/// The accounts whose roles can be assumed: `accounts`, or the home account without them.
pub(crate) fn role_accounts(cfg: &SimConfig) -> Vec<&str> {
    if cfg.accounts.is_empty() {
        vec![cfg.account_id.as_str()]
    } else {
        cfg.accounts.iter().map(String::as_str).collect()
    }
}

fn text(rng: &mut SplitMix64, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| char::from(alphabet[rng.below(alphabet.len() as u64) as usize]))
        .collect()
}

/// `(account, role name)` of `arn:aws:iam::ACCOUNT:role/[PATH/]NAME`.
pub(crate) fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let path = resource.strip_prefix("role/")?;
    let name = path.rsplit('/').next()?;
    (is_account_id(account) && !name.is_empty()).then_some((account, name))
}

/// STS's checks of the request members, with its messages.
fn validate(input: &AssumeRoleInput) -> Result<(String, String, Option<u64>), StsError> {
    let Some(arn) = input.role_arn.as_deref() else {
        return Err(null_member("roleArn"));
    };
    let Some(session) = input.role_session_name.as_deref() else {
        return Err(null_member("roleSessionName"));
    };
    let mut errors = Vec::new();
    let arn_len = arn.chars().count();
    if arn_len < 20 {
        errors.push(constraint(
            arn,
            "roleArn",
            "have length greater than or equal to 20",
        ));
    } else if arn_len > 2048 {
        errors.push(constraint(
            arn,
            "roleArn",
            "have length less than or equal to 2048",
        ));
    }
    let session_len = session.chars().count();
    if session_len < 2 {
        errors.push(constraint(
            session,
            "roleSessionName",
            "have length greater than or equal to 2",
        ));
    } else if session_len > 64 {
        errors.push(constraint(
            session,
            "roleSessionName",
            "have length less than or equal to 64",
        ));
    }
    let session_ok = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if !session.chars().all(session_ok) {
        errors.push(constraint(
            session,
            "roleSessionName",
            "satisfy regular expression pattern: [\\w+=,.@-]*",
        ));
    }
    if let Some(id) = input.external_id.as_deref() {
        let len = id.chars().count();
        if len < 2 {
            errors.push(constraint(
                id,
                "externalId",
                "have length greater than or equal to 2",
            ));
        } else if len > 1224 {
            errors.push(constraint(
                id,
                "externalId",
                "have length less than or equal to 1224",
            ));
        }
        if !id.chars().all(|c| session_ok(c) || c == ':' || c == '/') {
            errors.push(constraint(
                id,
                "externalId",
                "satisfy regular expression pattern: [\\w+=,.@:\\/-]*",
            ));
        }
    }
    let mut duration = None;
    if let Some(raw) = input.duration_seconds.as_deref() {
        match raw.parse::<i64>() {
            Ok(n) if n < 900 => errors.push(constraint(
                raw,
                "durationSeconds",
                "have value greater than or equal to 900",
            )),
            Ok(n) if n > 43_200 => errors.push(constraint(
                raw,
                "durationSeconds",
                "have value less than or equal to 43200",
            )),
            Ok(n) => duration = Some(n as u64),
            Err(_) => {
                return Err(StsError::Validation(format!(
                    "Value ({raw}) for parameter DurationSeconds is invalid. Expected an integer."
                )))
            }
        }
    }
    if !errors.is_empty() {
        return Err(StsError::Validation(format!(
            "{} validation error{} detected: {}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("; ")
        )));
    }
    if parse_role_arn(arn).is_none() {
        return Err(StsError::Validation(format!("{arn} is invalid")));
    }
    Ok((arn.to_owned(), session.to_owned(), duration))
}

fn null_member(name: &str) -> StsError {
    StsError::Validation(format!(
        "1 validation error detected: Value null at '{name}' failed to satisfy constraint: \
         Member must not be null"
    ))
}

fn constraint(value: &str, name: &str, rule: &str) -> String {
    let shown: String = value.chars().take(64).collect();
    format!("Value '{shown}' at '{name}' failed to satisfy constraint: Member must {rule}")
}

impl Identities {
    /// Who is calling with this access key id (`None`: an unsigned request) at wall time `now_ms`.
    pub(crate) fn caller(&self, cfg: &SimConfig, access_key: Option<&str>, now_ms: u64) -> Caller {
        match access_key.and_then(|k| self.issued.get(k)) {
            Some(i) => Caller {
                account: i.account.clone(),
                arn: i.assumed_arn.clone(),
                assumed: true,
                expired: now_ms >= i.expires_ms,
            },
            None => Caller {
                account: cfg.account_id.clone(),
                arn: format!("arn:aws:iam::{}:root", cfg.account_id),
                assumed: false,
                expired: false,
            },
        }
    }

    pub(crate) fn deny(&mut self, account: &str) {
        self.denied.insert(account.to_owned());
    }

    pub(crate) fn allow(&mut self, account: &str) {
        self.denied.remove(account);
    }

    pub(crate) fn denied(&self) -> Vec<String> {
        self.denied.iter().cloned().collect()
    }

    /// AssumeRole for `caller`, at wall time `now_ms`. `secret` makes the issued keys differ
    /// per simulator instance.
    pub(crate) fn assume_role(
        &mut self,
        cfg: &SimConfig,
        caller: &Caller,
        input: &AssumeRoleInput,
        now_ms: u64,
        secret: u64,
    ) -> Result<Grant, StsError> {
        let (role_arn, session, duration) = validate(input)?;
        let (account, role_name) = parse_role_arn(&role_arn).unwrap_or_default();
        let denied = || StsError::AccessDenied {
            message: format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.arn
            ),
        };
        if !role_accounts(cfg).contains(&account) || self.denied.contains(account) {
            return Err(denied());
        }
        if let Some(want) = &cfg.external_id {
            if input.external_id.as_deref() != Some(want.as_str()) {
                return Err(denied());
            }
        }
        let ttl_ms = cfg.credential_ttl.as_millis() as u64;
        let lifetime_ms = duration.map_or(ttl_ms, |d| ttl_ms.min(d * 1000));
        // STS writes whole seconds: the key stops working at the second it shows.
        let expires_ms = (now_ms + lifetime_ms) / 1000 * 1000;

        self.seq += 1;
        let mut rng = SplitMix64::new(mix64(secret ^ mix64(self.seq)));
        let access_key_id = loop {
            let id = format!("ASIA{}", text(&mut rng, KEY_ALPHABET, 16));
            if !self.issued.contains_key(&id) {
                break id;
            }
        };
        let secret_access_key = text(&mut rng, SECRET_ALPHABET, 40);
        let session_token = format!("IQoJb3JpZ2luX2Vj{}", text(&mut rng, SECRET_ALPHABET, 200));
        let mut role_rng = SplitMix64::new(mix64(cfg.seed ^ 0x201E) ^ hash_str(&role_arn));
        let assumed_role_id = format!("AROA{}:{session}", text(&mut role_rng, KEY_ALPHABET, 17));
        let assumed_arn = format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session}");
        self.issued.insert(
            access_key_id.clone(),
            Issued {
                account: account.to_owned(),
                assumed_arn: assumed_arn.clone(),
                expires_ms,
            },
        );
        Ok(Grant {
            access_key_id,
            secret_access_key,
            session_token,
            expires_ms,
            assumed_role_id,
            assumed_arn,
            account: account.to_owned(),
        })
    }
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0x51A7_u64, |h, b| mix64(h ^ u64::from(b)))
}

/// The organization's id, `o-` and ten characters, the same for a seed.
fn organization_id(cfg: &SimConfig) -> String {
    let mut rng = SplitMix64::new(mix64(cfg.seed ^ 0x0E6A));
    format!(
        "o-{}",
        text(&mut rng, b"abcdefghijklmnopqrstuvwxyz0123456789", 10)
    )
}

/// The organization's members in ListAccounts order: the management account (`account_id`),
/// then `accounts` (ACTIVE), then `suspended_accounts` (SUSPENDED), each once.
pub(crate) fn members(cfg: &SimConfig) -> Vec<Member> {
    let org = organization_id(cfg);
    let mut seen = BTreeSet::new();
    let base_secs = cfg.now_ms.div_euclid(1000) - 400 * 86_400;
    let all = std::iter::once((&cfg.account_id, "ACTIVE"))
        .chain(cfg.accounts.iter().map(|a| (a, "ACTIVE")))
        .chain(cfg.suspended_accounts.iter().map(|a| (a, "SUSPENDED")));
    let mut out = Vec::new();
    for (id, status) in all {
        if !seen.insert(id.clone()) {
            continue;
        }
        let k = out.len() as i64;
        let management = k == 0;
        out.push(Member {
            id: id.clone(),
            arn: format!(
                "arn:aws:organizations::{}:account/{org}/{id}",
                cfg.account_id
            ),
            email: format!("aws+{id}@example.com"),
            name: if management {
                "Management".to_owned()
            } else {
                format!("Member {k}")
            },
            status,
            joined_secs: base_secs + k * 86_400 + 3_600 + k * 61,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            accounts: vec!["111111111111".into(), "222222222222".into()],
            suspended_accounts: vec!["333333333333".into()],
            credential_ttl: Duration::from_secs(3600),
            ..SimConfig::default()
        }
    }

    fn input(arn: &str, session: &str) -> AssumeRoleInput {
        AssumeRoleInput {
            role_arn: Some(arn.into()),
            role_session_name: Some(session.into()),
            ..AssumeRoleInput::default()
        }
    }

    fn home(cfg: &SimConfig) -> Caller {
        Identities::default().caller(cfg, Some("AKIDEXAMPLE"), 0)
    }

    #[test]
    fn access_keys_come_from_the_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=ASIAABC/20250101/us-east-1/sts/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(signed_access_key(auth), Some("ASIAABC"));
        assert_eq!(signed_access_key("Bearer x"), None);
        assert_eq!(
            arn_account("arn:aws:workspaces-web:us-east-1:111111111111:portal/x"),
            "111111111111"
        );
    }

    #[test]
    fn role_arns_and_session_names_are_checked_like_sts() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::111111111111:role/ops/Archiver"),
            Some(("111111111111", "Archiver"))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::111111111111:user/bob"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::1111:role/x"), None);
        let c = cfg();
        let mut ids = Identities::default();
        let arn = "arn:aws:iam::111111111111:role/Archiver";
        for (arn, session, want) in [
            (arn, "a", "at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2"),
            (arn, &"x".repeat(65), "Member must have length less than or equal to 64"),
            (arn, "has space", "Member must satisfy regular expression pattern: [\\w+=,.@-]*"),
            ("arn:aws:iam::111111111111:user/bob", "ok", "arn:aws:iam::111111111111:user/bob is invalid"),
            ("short", "ok", "at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"),
        ] {
            match ids.assume_role(&c, &home(&c), &input(arn, session), 0, 1) {
                Err(StsError::Validation(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{arn} {session}: {other:?}"),
            }
        }
        let missing = AssumeRoleInput {
            role_arn: Some(arn.into()),
            ..AssumeRoleInput::default()
        };
        assert!(matches!(
            ids.assume_role(&c, &home(&c), &missing, 0, 1),
            Err(StsError::Validation(m)) if m.contains("Value null at 'roleSessionName'")
        ));
    }

    #[test]
    fn grants_are_remembered_until_they_expire() {
        let c = SimConfig {
            credential_ttl: Duration::from_millis(2_500),
            ..cfg()
        };
        let mut ids = Identities::default();
        let now = 1_764_150_000_400;
        let g = ids
            .assume_role(
                &c,
                &home(&c),
                &input("arn:aws:iam::222222222222:role/Archiver", "run-1"),
                now,
                7,
            )
            .unwrap();
        assert!(g.access_key_id.starts_with("ASIA") && g.access_key_id.len() == 20);
        assert_eq!(g.secret_access_key.len(), 40);
        assert_eq!(
            g.expires_ms, 1_764_150_002_000,
            "whole seconds, never later than the TTL"
        );
        assert_eq!(
            g.assumed_arn,
            "arn:aws:sts::222222222222:assumed-role/Archiver/run-1"
        );
        assert!(g.assumed_role_id.starts_with("AROA") && g.assumed_role_id.ends_with(":run-1"));
        assert_eq!(iso8601(g.expires_ms), "2025-11-26T09:40:02Z");
        let caller = ids.caller(&c, Some(&g.access_key_id), now);
        assert_eq!(caller.account, "222222222222");
        assert!(caller.assumed && !caller.expired);
        assert!(ids.caller(&c, Some(&g.access_key_id), g.expires_ms).expired);
        assert_eq!(ids.caller(&c, Some("test"), now).account, c.account_id);
        let again = ids
            .assume_role(
                &c,
                &home(&c),
                &input("arn:aws:iam::222222222222:role/Archiver", "run-1"),
                now,
                7,
            )
            .unwrap();
        assert_ne!(again.access_key_id, g.access_key_id);
        // DurationSeconds shortens nothing below the TTL here, but is range-checked.
        let mut long = input("arn:aws:iam::222222222222:role/Archiver", "run-1");
        long.duration_seconds = Some("899".into());
        assert!(matches!(
            ids.assume_role(&c, &home(&c), &long, now, 7),
            Err(StsError::Validation(_))
        ));
        long.duration_seconds = Some("900".into());
        let g = ids.assume_role(&c, &home(&c), &long, now, 7).unwrap();
        assert_eq!(g.expires_ms, 1_764_150_002_000);
    }

    #[test]
    fn roles_outside_the_accounts_denied_roles_and_external_ids_are_refused() {
        let mut c = cfg();
        let mut ids = Identities::default();
        let caller = home(&c);
        let denied = |r: Result<Grant, StsError>| match r {
            Err(StsError::AccessDenied { message }) => message,
            other => panic!("{other:?}"),
        };
        let m = denied(ids.assume_role(
            &c,
            &caller,
            &input("arn:aws:iam::333333333333:role/A", "s1"),
            0,
            1,
        ));
        assert_eq!(
            m,
            "User: arn:aws:iam::123456789012:root is not authorized to perform: sts:AssumeRole \
             on resource: arn:aws:iam::333333333333:role/A"
        );
        denied(ids.assume_role(
            &c,
            &caller,
            &input("arn:aws:iam::123456789012:role/A", "s1"),
            0,
            1,
        ));
        ids.deny("111111111111");
        denied(ids.assume_role(
            &c,
            &caller,
            &input("arn:aws:iam::111111111111:role/A", "s1"),
            0,
            1,
        ));
        ids.allow("111111111111");
        ids.assume_role(
            &c,
            &caller,
            &input("arn:aws:iam::111111111111:role/A", "s1"),
            0,
            1,
        )
        .unwrap();
        c.external_id = Some("ext-42".into());
        let mut i = input("arn:aws:iam::111111111111:role/A", "s1");
        denied(ids.assume_role(&c, &caller, &i, 0, 1));
        i.external_id = Some("ext-43".into());
        denied(ids.assume_role(&c, &caller, &i, 0, 1));
        i.external_id = Some("ext-42".into());
        ids.assume_role(&c, &caller, &i, 0, 1).unwrap();
        // Without `accounts`, roles are in the home account.
        let single = SimConfig::default();
        ids.assume_role(
            &single,
            &caller,
            &input("arn:aws:iam::123456789012:role/A", "s1"),
            0,
            1,
        )
        .unwrap();
        denied(ids.assume_role(
            &single,
            &caller,
            &input("arn:aws:iam::111111111111:role/A", "s1"),
            0,
            1,
        ));
    }

    #[test]
    fn members_list_the_management_account_first_each_once() {
        let mut c = cfg();
        c.accounts.push(c.account_id.clone());
        let m = members(&c);
        let ids: Vec<_> = m.iter().map(|m| (m.id.as_str(), m.status)).collect();
        assert_eq!(
            ids,
            [
                ("123456789012", "ACTIVE"),
                ("111111111111", "ACTIVE"),
                ("222222222222", "ACTIVE"),
                ("333333333333", "SUSPENDED")
            ]
        );
        assert!(m[1]
            .arn
            .starts_with("arn:aws:organizations::123456789012:account/o-"));
        assert!(m[1].arn.ends_with("/111111111111"));
        assert!(m.windows(2).all(|w| w[0].joined_secs < w[1].joined_secs));
    }
}
