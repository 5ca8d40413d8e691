//! A PostgreSQL role granted to the person's login: `GRANT "role" TO "login"`, read back in
//! `pg_auth_members` after the grant and after the revoke; the revoke also
//! ends that login's open sessions (a role change does not reach sessions already open).

use anyhow::Context;
use async_trait::async_trait;
use sea_orm::sqlx::AssertSqlSafe;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{GrantSpec, Provider};

/// Admin connections per postgres provider: grants and revokes in flight at once against it.
const POOL_SIZE: u32 = 4;

pub struct PostgresProvider {
    pool: PgPool,
}

/// `"name"` with inner quotes doubled: the only safe way to put a name into SQL text.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Is a login a superuser, and is it the login this connection uses?
const PRIVILEGED_SQL: &str =
    "SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = $1";

fn privilege(found: Option<(bool, bool)>) -> Option<&'static str> {
    match found {
        Some((_, true)) => Some("is the login jitbot's provider connects as"),
        Some((true, false)) => Some("is a superuser"),
        _ => None,
    }
}

/// Of `logins`, those that are superusers or the admin URL's own login, each with why: one
/// connection, one attempt (a start-up check must not wait on a pool's reconnects).
pub async fn privileged_logins(
    admin_url: &str,
    logins: &[String],
) -> anyhow::Result<Vec<(String, &'static str)>> {
    use sea_orm::sqlx::Connection;
    let options: PgConnectOptions = admin_url
        .parse()
        .context("the postgres provider's admin URL is not valid")?;
    let mut conn = sea_orm::sqlx::PgConnection::connect_with(&options)
        .await
        .context("connecting to check identities")?;
    let mut out = Vec::new();
    for login in logins {
        let found: Option<(bool, bool)> = sea_orm::sqlx::query_as(PRIVILEGED_SQL)
            .bind(login)
            .fetch_optional(&mut conn)
            .await
            .context("checking the login's privileges")?;
        if let Some(why) = privilege(found) {
            out.push((login.clone(), why));
        }
    }
    let _ = conn.close().await;
    Ok(out)
}

impl PostgresProvider {
    /// Connects lazily: a database that is down fails the grant (and is retried), not start-up.
    /// Every statement runs under `statement_timeout` (the provider's timeout) and gives up
    /// waiting for a lock after half of it (`lock_timeout`), so a GRANT stuck behind another
    /// session's lock fails and is retried instead of holding the job.
    pub fn new(admin_url: &str, timeout: std::time::Duration) -> anyhow::Result<Self> {
        let statement_ms = timeout.as_millis().max(100);
        let lock_ms = (statement_ms / 2).max(50);
        let options: PgConnectOptions = admin_url
            .parse()
            .context("the postgres provider's admin URL is not valid")?;
        let options = options.options([
            ("statement_timeout", format!("{statement_ms}ms")),
            ("lock_timeout", format!("{lock_ms}ms")),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    fn names(spec: &GrantSpec) -> anyhow::Result<(&str, &str)> {
        let role = spec
            .grant
            .get("role")
            .and_then(|r| r.as_str())
            .context("the grant has no `role`")?;
        let login = spec
            .identity
            .get("postgres")
            .map(String::as_str)
            .context("the person has no postgres login in `identities`")?;
        Ok((role, login))
    }

    /// Why `login` must never be granted to or revoked from, if it must not: a superuser, or
    /// the login jitbot itself connects as.
    pub async fn privileged(&self, login: &str) -> anyhow::Result<Option<&'static str>> {
        let found: Option<(bool, bool)> = sea_orm::sqlx::query_as(PRIVILEGED_SQL)
            .bind(login)
            .fetch_optional(&self.pool)
            .await
            .context("checking the login's privileges")?;
        Ok(privilege(found))
    }

    async fn role_exists(&self, name: &str) -> anyhow::Result<bool> {
        let found: Option<(i32,)> =
            sea_orm::sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    async fn holds(&self, spec: &GrantSpec) -> anyhow::Result<bool> {
        let (role, login) = Self::names(spec)?;
        let (member,): (bool,) = sea_orm::sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE r.rolname = $1 AND u.rolname = $2)",
        )
        .bind(role)
        .bind(login)
        .fetch_one(&self.pool)
        .await
        .context("checking role membership")?;
        Ok(member)
    }

    /// Membership is one fact per role and login, however many grants asked for it.
    fn access_key(&self, spec: &GrantSpec) -> Option<String> {
        let (role, login) = Self::names(spec).ok()?;
        Some(format!("role={role}\nlogin={login}"))
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let (role, login) = Self::names(spec)?;
        if let Some(why) = self.privileged(login).await? {
            anyhow::bail!("refusing to grant to {}: it {why}", quote_ident(login));
        }
        for name in [role, login] {
            if !self.role_exists(name).await? {
                anyhow::bail!("role {} does not exist", quote_ident(name));
            }
        }
        // The names went through quote_ident above: this is the audited spot.
        // Granting a role already held is a notice, not an error: idempotent as it stands.
        let sql = format!("GRANT {} TO {}", quote_ident(role), quote_ident(login));
        sea_orm::sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .with_context(|| format!("GRANT {role}"))?;
        // The receipt: the membership is there.
        if !self.holds(spec).await? {
            anyhow::bail!(
                "{} is not a member of {} after GRANT",
                quote_ident(login),
                quote_ident(role)
            );
        }
        Ok(())
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let (role, login) = Self::names(spec)?;
        // jitbot never granted to such a login (the grant refuses it), so there is nothing of
        // ours to take back; ending its sessions could cut jitbot's own or an admin's.
        if let Some(why) = self.privileged(login).await? {
            tracing::warn!(login, why, "not revoking from a privileged login");
            return Ok(());
        }
        if self.role_exists(role).await? && self.role_exists(login).await? {
            // Revoking a membership that is gone is a warning, not an error.
            let sql = format!("REVOKE {} FROM {}", quote_ident(role), quote_ident(login));
            sea_orm::sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&self.pool)
                .await
                .with_context(|| format!("REVOKE {role}"))?;
            // The receipt: the membership is gone. (A REVOKE by a grantor other than the one
            // that granted it only warns and leaves it in place.)
            if self.holds(spec).await? {
                anyhow::bail!(
                    "{} is still a member of {} after REVOKE (granted by another role?)",
                    quote_ident(login),
                    quote_ident(role)
                );
            }
        }
        sea_orm::sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()")
            .bind(login)
            .execute(&self.pool)
            .await
            .context("ending the login's open sessions")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quote_ident;

    #[test]
    fn hostile_names_stay_one_identifier() {
        assert_eq!(quote_ident("prod_rw"), "\"prod_rw\"");
        assert_eq!(
            quote_ident("alice\"; DROP TABLE x; --"),
            "\"alice\"\"; DROP TABLE x; --\""
        );
    }
}
