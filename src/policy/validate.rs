//! Errors of the policy generator, and validation of every value it is given (names the value and what is expected).

// ---------------------------------------------------------------------------
// Errors and validation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A value of the wrong form: names the option, the value and the form expected.
    #[error("{what} `{value}` is not valid: expected {expected}")]
    Invalid {
        what: String,
        value: String,
        expected: String,
    },
    /// Options that do not fit together, or a file that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// `--lookup` could not ask STS.
    #[error("--lookup: {0}")]
    Lookup(String),
}

pub(crate) fn invalid(what: &str, value: &str, expected: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        what: what.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A general purpose bucket name, by S3's naming rules.
pub fn validate_bucket(name: &str, what: &str) -> Result<(), PolicyError> {
    if let Some(rest) = name
        .strip_prefix("s3://")
        .or_else(|| name.split_once(":s3:::").map(|(_, b)| b))
    {
        let bare = rest.split('/').next().unwrap_or_default();
        return Err(invalid(
            what,
            name,
            format!("the bucket name alone (`{bare}`), not a URL or ARN"),
        ));
    }
    let rule = "a bucket name: 3 to 63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit";
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || !edge(name.as_bytes().first())
        || !edge(name.as_bytes().last())
    {
        return Err(invalid(what, name, rule));
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(invalid(
            what,
            name,
            "a bucket name without `..`, `.-` or `-.`",
        ));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid(what, name, "a bucket name, not an IP address"));
    }
    Ok(())
}

/// A 12-digit AWS account id.
pub fn validate_account(id: &str, what: &str) -> Result<(), PolicyError> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(
            what,
            id,
            "a 12-digit AWS account id, e.g. 111122223333",
        ))
    }
}

/// An AWS partition name: `aws`, `aws-cn`, `aws-us-gov`, `aws-iso-b`, …
pub fn validate_partition(p: &str) -> Result<(), PolicyError> {
    let ok = p == "aws"
        || p.strip_prefix("aws-").is_some_and(|rest| {
            rest.split('-')
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--partition",
            p,
            "aws, aws-cn, aws-us-gov or another aws-… partition",
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    Role,
    User,
    /// `arn:aws:iam::ACCOUNT:root`
    Root,
}

/// An IAM role, user or account-root ARN, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamArn {
    pub partition: String,
    pub account: String,
    pub kind: PrincipalKind,
}

/// Parses `arn:PARTITION:iam::ACCOUNT:(role|user)/[PATH/]NAME` (or `:root`
/// when `kinds` allows it), refusing any other kind.
pub fn parse_iam_arn(
    arn: &str,
    what: &str,
    kinds: &[PrincipalKind],
) -> Result<IamArn, PolicyError> {
    let names: Vec<&str> = kinds
        .iter()
        .map(|k| match k {
            PrincipalKind::Role => "role/NAME",
            PrincipalKind::User => "user/NAME",
            PrincipalKind::Root => "root",
        })
        .collect();
    let mut expected = format!(
        "arn:aws:iam::ACCOUNT:{} (ACCOUNT: 12 digits)",
        names.join(" or ")
    );
    if arn.contains(":assumed-role/") {
        expected.push_str(
            "; this is a role session's ARN, pass the role's own arn:aws:iam::ACCOUNT:role/NAME",
        );
    }
    let bad = || invalid(what, arn, expected.clone());
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [a, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    if a != "arn"
        || service != "iam"
        || !region.is_empty()
        || validate_partition(partition).is_err()
    {
        return Err(bad());
    }
    validate_account(account, what).map_err(|_| bad())?;
    let (kind, rest) = if resource == "root" {
        (PrincipalKind::Root, None)
    } else if let Some(r) = resource.strip_prefix("role/") {
        (PrincipalKind::Role, Some(r))
    } else if let Some(u) = resource.strip_prefix("user/") {
        (PrincipalKind::User, Some(u))
    } else {
        return Err(bad());
    };
    if !kinds.contains(&kind) {
        return Err(bad());
    }
    if let Some(path_and_name) = rest {
        // Names are 1 to 64 of [A-Za-z0-9+=,.@_-]; paths are /-separated segments of the same.
        let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !path_and_name.chars().all(|c| name_char(c) || c == '/')
            || path_and_name.contains("//")
        {
            return Err(bad());
        }
    }
    Ok(IamArn {
        partition: partition.to_string(),
        account: account.to_string(),
        kind,
    })
}

/// A principal let through by `restricted-bucket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedId {
    /// A role's unique id (AROA…): every session of the role.
    Role(String),
    /// An IAM user's unique id (AIDA…).
    User(String),
    /// An account id: its root user.
    Account(String),
}

impl AllowedId {
    /// The `aws:userid` pattern that matches this principal's requests.
    pub fn pattern(&self) -> String {
        match self {
            AllowedId::Role(id) => format!("{id}:*"),
            AllowedId::User(id) | AllowedId::Account(id) => id.clone(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            AllowedId::Role(id) => format!("role id {id}"),
            AllowedId::User(id) => format!("user id {id}"),
            AllowedId::Account(id) => format!("root user of account {id}"),
        }
    }
}

/// A role (`AROA`) or user (`AIDA`) unique id: the prefix and at least 16
/// uppercase letters or digits.
pub fn validate_unique_id(id: &str, what: &str, prefix: &str) -> Result<(), PolicyError> {
    let get = match prefix {
        "AROA" => "aws iam get-role --role-name NAME --query Role.RoleId --output text",
        _ => "aws iam get-user --user-name NAME --query User.UserId --output text",
    };
    let body_ok = |b: &str| {
        (16..=124).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    match id.strip_prefix(prefix) {
        Some(body) if body_ok(body) => Ok(()),
        _ => {
            let mut expected = format!(
                "a unique id `{prefix}` followed by 16 or more uppercase letters and digits (from `{get}`)"
            );
            if id.ends_with(":*") {
                expected.push_str("; pass the bare id, syncmount adds `:*`");
            } else if id.starts_with("AIDA") && prefix == "AROA" {
                expected.push_str("; this is a user id, pass it with --allow-user-id");
            } else if id.starts_with("AROA") && prefix == "AIDA" {
                expected.push_str("; this is a role id, pass it with --allow-role-id");
            } else if id.starts_with("AKIA") || id.starts_with("ASIA") {
                expected.push_str("; this is an access key id, not a principal's unique id");
            } else if id.starts_with("arn:") {
                expected.push_str("; this is an ARN, not the unique id");
            }
            Err(invalid(what, id, expected))
        }
    }
}

/// The ids given on the command line, validated, in order, without repeats.
pub fn allowed_ids(
    roles: &[String],
    users: &[String],
    accounts: &[String],
) -> Result<Vec<AllowedId>, PolicyError> {
    let mut out = Vec::new();
    for r in roles {
        validate_unique_id(r, "--allow-role-id", "AROA")?;
        out.push(AllowedId::Role(r.clone()));
    }
    for u in users {
        validate_unique_id(u, "--allow-user-id", "AIDA")?;
        out.push(AllowedId::User(u.clone()));
    }
    for a in accounts {
        validate_account(a, "--allow-account")?;
        out.push(AllowedId::Account(a.clone()));
    }
    Ok(out)
}

/// What to allow for a caller, from GetCallerIdentity's `UserId`:
/// `AROA…:session` for an assumed role, `AIDA…` for an IAM user, the
/// account id for the root user.
pub fn allowed_from_caller(user_id: &str) -> Result<AllowedId, PolicyError> {
    let what = "the caller's UserId (STS GetCallerIdentity)";
    if let Some((role, _session)) = user_id.split_once(':') {
        if role.starts_with("AROA") {
            validate_unique_id(role, what, "AROA").map_err(|_| {
                invalid(
                    what,
                    user_id,
                    "AROA followed by 16 or more uppercase letters and digits, then `:session`",
                )
            })?;
            return Ok(AllowedId::Role(role.to_string()));
        }
        return Err(invalid(
            what,
            user_id,
            "an assumed role (AROA…:session), an IAM user (AIDA…) or a root user (account id); federated sessions cannot be allowed by id, use --allow-role-id or --allow-user-id",
        ));
    }
    if user_id.starts_with("AIDA") {
        validate_unique_id(user_id, what, "AIDA")?;
        return Ok(AllowedId::User(user_id.to_string()));
    }
    validate_account(user_id, what).map_err(|_| {
        invalid(
            what,
            user_id,
            "an assumed role (AROA…:session), an IAM user (AIDA…) or a root user (account id)",
        )
    })?;
    Ok(AllowedId::Account(user_id.to_string()))
}
