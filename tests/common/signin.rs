//! People in the test AD who sign in to the dashboard, and a browser without JavaScript
//! that keeps their session cookie and sends the forms' CSRF token.

use mailboxd::config::Settings;

use super::ad::{TestAd, User};

/// The people of one test in AD: an operator through a nested group, a viewer, a disabled
/// operator and someone in no group, each with a password.
pub struct People {
    pub t: String,
    pub operators: String,
    pub viewers: String,
    pub team: String,
    pub operator: String,
    pub operator_dn: String,
    pub viewer: String,
    pub disabled: String,
    pub outsider: String,
}

impl People {
    /// Settings whose directory is this DC and whose dashboard groups are these people's.
    pub fn grant(&self, ad: &TestAd, s: &mut Settings) {
        s.ldap = ad.settings();
        s.admin.operator_groups = vec![self.operators.clone()];
        s.admin.viewer_groups = vec![self.viewers.clone()];
    }

    pub fn password(&self, sam: &str) -> String {
        format!("Pw-{sam}-{}!", self.t)
    }
}

pub async fn people(ad: &TestAd) -> People {
    let t = super::fresh_tag();
    let short = &t[t.len().saturating_sub(8)..];
    let operators = ad.add_group(&format!("mbx-ops-{short}")).await;
    let team = ad.add_group(&format!("mbx-team-{short}")).await;
    let viewers = ad.add_group(&format!("mbx-view-{short}")).await;
    // Nested: the operator is in the team, the team is in the operators' group.
    ad.add_member(&operators, &team).await;
    let mut p = People {
        t: short.to_owned(),
        operators,
        viewers,
        team,
        operator: format!("op{short}"),
        operator_dn: String::new(),
        viewer: format!("vw{short}"),
        disabled: format!("off{short}"),
        outsider: format!("out{short}"),
    };
    for (sam, group) in [
        (p.operator.clone(), Some(p.team.clone())),
        (p.viewer.clone(), Some(p.viewers.clone())),
        (p.disabled.clone(), Some(p.team.clone())),
        (p.outsider.clone(), None),
    ] {
        let (dn, _) = ad.add_user(&sam, &sam, &User::default()).await;
        ad.set_password(&dn, &p.password(&sam)).await;
        if let Some(g) = group {
            ad.add_member(&g, &dn).await;
        }
        if sam == p.disabled {
            ad.disable(&dn).await;
        }
        if sam == p.operator {
            p.operator_dn = dn;
        }
    }
    p
}

/// A browser without JavaScript: follows nothing, keeps the session cookie.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    pub fn new(addr: impl std::fmt::Display) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{addr}"),
            cookie: None,
        }
    }

    /// Another replica's address, the same cookie.
    pub fn at(&self, addr: impl std::fmt::Display) -> Browser {
        Browser {
            base: format!("http://{addr}"),
            cookie: self.cookie.clone(),
            client: self.client.clone(),
        }
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Signs in; returns the status, the Set-Cookie header and the page.
    pub async fn sign_in(&mut self, user: &str, password: &str) -> (u16, String, String) {
        let r = self
            .post("/login", &[("user", user), ("password", password)])
            .await;
        let status = r.status().as_u16();
        let set = r
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if status == 303 {
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        (status, set, r.text().await.unwrap())
    }
}

/// The CSRF token a page's forms carry.
pub fn csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}
