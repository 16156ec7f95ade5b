//! The web experience in a real headless Chromium: what a person sees and
//! does, against the real server and the fake API on loopback.

use reqwest::StatusCode;
use serde_json::{Value, json};

use oauth_consumer_server::session::COOKIE_NAME;

use crate::support::browser::{Chrome, Page};
use crate::support::fake_api::{
    AccessLog, AppLog, FAKE_DEPLOYMENT_ID, FAKE_INSTANCE_ID, FAKE_ORGANISATION_ID, FAKE_USER_ID,
    FAKE_USER_NAME, FakeSocket, LogKind, LogStreamRequest,
};
use crate::support::{ConsumerMode, FakeApi, Options, TestApp};

/// Logs in the way a person does: the login button, the API's authorize
/// page, "Approve", and back to the dashboard.
async fn log_in_by_clicking(page: &Page, app: &TestApp) {
    page.open("/").await;
    page.wait_until("the login page", || async {
        (page.path().await == "/login").then_some(())
    })
    .await;
    if app.options.consumer == ConsumerMode::Visitor {
        page.type_into("#consumer_key", FakeApi::CONSUMER_KEY).await;
        page.type_into("#consumer_secret", FakeApi::CONSUMER_SECRET)
            .await;
    }
    page.click("#login").await;
    page.click("#approve").await;
    page.find("#token").await;
    assert_eq!(page.path().await, "/", "back on our dashboard");
}

async fn visitor_app() -> TestApp {
    TestApp::spawn_with(Options {
        consumer: ConsumerMode::Visitor,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn logging_in_by_clicking_shows_the_tokens_the_api_issued() {
    let app = TestApp::spawn().await;
    Chrome::run("login-operator", app.url.clone(), |page| async move {
        // Act
        log_in_by_clicking(&page, &app).await;

        // Assert
        let issued = app.api.issued_access_tokens();
        assert_eq!(issued.len(), 1);
        assert_eq!(page.text("#token").await, issued[0].token);
        assert_eq!(page.text("#token-secret").await, issued[0].secret);
        assert_eq!(page.text("#consumer-key").await, FakeApi::CONSUMER_KEY);
        assert_eq!(page.text("#user-id").await, FAKE_USER_ID);
        let expiry = page.find("#expiration-date").await;
        assert_eq!(
            expiry.attr("datetime").await.expect("attribute").as_deref(),
            Some(issued[0].expiration_date.as_str())
        );
        let body = page.text("main").await;
        assert!(
            !body.contains(FakeApi::CONSUMER_SECRET),
            "the operator's secret is never shown"
        );
        assert!(
            page.js("return document.getElementById('clever-login')", vec![])
                .await
                .is_null(),
            "no clever-tools snippet without the consumer secret"
        );
        page.text("#proxy-curl").await;
        page.screenshot("dashboard").await;
    })
    .await;
}

#[tokio::test]
async fn a_visitor_gets_ready_to_paste_snippets_with_their_consumer() {
    let app = visitor_app().await;
    Chrome::run("login-visitor", app.url.clone(), |page| async move {
        page.open("/login").await;
        let callback = page.text("#callback-url").await;
        assert_eq!(callback, format!("{}/callback", app.url));
        page.screenshot("login").await;

        log_in_by_clicking(&page, &app).await;

        let issued = &app.api.issued_access_tokens()[0];
        assert_eq!(
            page.text("#consumer-secret").await,
            FakeApi::CONSUMER_SECRET
        );
        let login = page.text("#clever-login").await;
        assert!(
            login.contains(&format!("--token {}", issued.token)),
            "{login}"
        );
        assert!(login.contains("--oauth-consumer-key fake-consumer-key"));
        assert!(login.contains(&format!("--api-host {}", app.api.url())));
        let env = page.text("#env-lines").await;
        assert!(env.contains(&format!("CLEVER_SECRET={}", issued.secret)));
        let config: Value =
            serde_json::from_str(&page.text("#config-file").await).expect("config file is JSON");
        assert_eq!(
            config,
            json!({
                "version": 1,
                "profiles": [{
                    "alias": "default",
                    "token": issued.token,
                    "secret": issued.secret,
                    "expirationDate": issued.expiration_date,
                    "userId": FAKE_USER_ID,
                    "overrides": {
                        "API_HOST": app.api.url(),
                        "OAUTH_CONSUMER_KEY": FakeApi::CONSUMER_KEY,
                        "OAUTH_CONSUMER_SECRET": FakeApi::CONSUMER_SECRET,
                    },
                }],
            })
        );
        page.full_screenshot("dashboard").await;
    })
    .await;
}

#[tokio::test]
async fn a_copy_button_puts_the_value_on_the_clipboard() {
    let app = TestApp::spawn().await;
    Chrome::run("copy", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        page.grant_clipboard().await;
        let token = app.api.issued_access_tokens()[0].token.clone();

        page.click("button.copy[data-copy=token]").await;

        let copied = page
            .wait_for_js(
                "the copy button to report what it copied",
                "return document.querySelector('button.copy[data-copy=token]').dataset.copied",
            )
            .await;
        assert_eq!(copied, json!(token));
        let clipboard = page
            .js_async(
                "const done = arguments[arguments.length - 1];\
                 navigator.clipboard.readText().then(done, (error) => done('refused: ' + error));",
                vec![],
            )
            .await;
        assert_eq!(clipboard, json!(token));
        assert_eq!(
            page.text("button.copy[data-copy=token]").await,
            "Copied",
            "the button says it worked"
        );
    })
    .await;
}

#[tokio::test]
async fn the_account_panel_shows_who_is_logged_in() {
    let app = TestApp::spawn().await;
    Chrome::run("account", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;

        let name = page
            .wait_for_text("#account-name", |text| text == FAKE_USER_NAME)
            .await;
        assert_eq!(name, FAKE_USER_NAME);
        assert_eq!(page.text("#account-email").await, "ada@example.com");
        assert_eq!(page.text("#whoami").await, FAKE_USER_NAME);
        page.wait_for_text("#account-orgs", |text| text.contains("hello-world"))
            .await;
        assert!(page.text("#account-orgs").await.contains("sleepy-worker"));
        page.screenshot("dashboard").await;
    })
    .await;
}

#[tokio::test]
async fn a_proxy_token_created_in_the_page_works_until_it_is_revoked_there() {
    let app = TestApp::spawn().await;
    Chrome::run("proxy-tokens", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        let service = reqwest::Client::new();
        let call_api = |token: String| {
            let service = service.clone();
            let url = app.at("/api/v2/self");
            async move {
                service
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("GET /api/v2/self")
            }
        };

        // Create
        page.type_into("#token-name", "deploy bot").await;
        page.click("#token-create").await;
        let token = page
            .wait_for_text("#new-token", |text| text.starts_with("ocsp_"))
            .await;
        page.wait_for_text("#token-list", |text| text.contains("deploy bot"))
            .await;
        page.screenshot("created").await;

        // The token works from a plain HTTP client.
        let used = call_api(token.clone()).await;
        assert_eq!(used.status(), StatusCode::OK);
        let user: Value = used.json().await.expect("JSON");
        assert_eq!(user["name"], FAKE_USER_NAME);

        // Revoke: two clicks on the same button.
        page.click("#token-list button[data-revoke]").await;
        page.wait_for_text("#token-list button[data-revoke]", |text| {
            text == "Confirm revoke"
        })
        .await;
        page.click("#token-list button[data-revoke]").await;
        page.wait_for_text("#tokens-status", |text| text.contains("revoked"))
            .await;
        assert!(!page.text("#token-list").await.contains("deploy bot"));
        assert!(
            !page
                .find("#token-created")
                .await
                .is_displayed()
                .await
                .expect("displayed"),
            "the revoked token is no longer shown"
        );

        let refused = call_api(token).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn logging_out_returns_to_the_login_page_and_the_api_is_then_refused() {
    let app = TestApp::spawn().await;
    Chrome::run("logout", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;

        page.click("#logout").await;

        page.wait_until("the login page", || async {
            (page.path().await == "/login").then_some(())
        })
        .await;
        page.find("#login").await;
        let statuses = page
            .js_async(
                "const done = arguments[arguments.length - 1];\
                 Promise.all(['/api/v2/self', '/tokens'].map((path) => fetch(path).then((r) => r.status)))\
                   .then(done, (error) => done(String(error)));",
                vec![],
            )
            .await;
        assert_eq!(statuses, json!([401, 401]));
        page.open("/").await;
        assert_eq!(page.path().await, "/login", "the dashboard is gone");
    })
    .await;
}

#[tokio::test]
async fn the_pages_run_under_the_content_security_policy() {
    let app = TestApp::spawn().await;
    Chrome::run("csp", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        // The page's own modules ran: the token list was filled in.
        page.wait_for_text("#token-list", |text| !text.contains("Loading"))
            .await;

        let inline = page
            .js(
                "return document.querySelectorAll('script:not([src]), [style]').length",
                vec![],
            )
            .await;
        assert_eq!(inline, json!(0), "no inline script or style attribute");
        // An inline script injected into the page does not run.
        let ran = page
            .js_async(
                "const done = arguments[arguments.length - 1];\
                 window.injected = false;\
                 const script = document.createElement('script');\
                 script.textContent = 'window.injected = true';\
                 document.body.append(script);\
                 setTimeout(() => done(window.injected), 50);",
                vec![],
            )
            .await;
        assert_eq!(ran, json!(false), "the CSP blocks inline scripts");
        let console = page.console().await;
        let (injected, others): (Vec<_>, Vec<_>) = console
            .iter()
            .filter(|line| line.contains("Content Security Policy"))
            .partition(|line| line.contains("inline script"));
        assert_eq!(injected.len(), 1, "the refusal is reported: {console:#?}");
        assert!(
            others.is_empty(),
            "nothing of the page's own breaks the policy: {others:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_pages_fit_a_phone_and_follow_the_dark_scheme() {
    let app = visitor_app().await;
    Chrome::run("looks", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        // A token in the list, to see the table too.
        page.type_into("#token-name", "deploy bot").await;
        page.click("#token-create").await;
        page.wait_for_text("#token-list", |text| text.contains("deploy bot"))
            .await;
        let mut backgrounds = Vec::new();
        for (phone, dark) in [(false, false), (false, true), (true, false), (true, true)] {
            page.emulate_phone(phone).await;
            page.emulate_dark(dark).await;
            let label = format!(
                "{}-{}",
                if phone { "phone" } else { "desktop" },
                if dark { "dark" } else { "light" }
            );
            for (path, name) in [("/login", "login"), ("/", "dashboard")] {
                page.open(path).await;
                if path == "/" {
                    // What the modules fill in, so the picture is complete.
                    page.wait_for_js(
                        "the dashboard's panels",
                        "return document.getElementById('account').getAttribute('aria-busy') === 'false'\
                           && !document.getElementById('token-list').textContent.includes('Loading')",
                    )
                    .await;
                }
                let overflow = page
                    .js(
                        "return document.documentElement.scrollWidth - window.innerWidth",
                        vec![],
                    )
                    .await;
                assert!(
                    overflow.as_i64().unwrap_or(1) <= 0,
                    "{path} {label}: the page is wider than the screen by {overflow}px"
                );
                let background = page
                    .js("return getComputedStyle(document.documentElement).backgroundColor", vec![])
                    .await;
                backgrounds.push((dark, background));
                page.full_screenshot(&format!("{name}-{label}")).await;
            }
        }
        let light: Vec<_> = backgrounds.iter().filter(|(dark, _)| !dark).collect();
        let dark: Vec<_> = backgrounds.iter().filter(|(dark, _)| *dark).collect();
        assert!(
            light.iter().all(|(_, l)| dark.iter().all(|(_, d)| l != d)),
            "dark pages have another background: {backgrounds:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn failures_are_told_in_plain_words_where_they_happen() {
    let app = TestApp::spawn().await;
    Chrome::run("errors", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        page.wait_for_text("#account-name", |text| text == FAKE_USER_NAME)
            .await;

        // The API goes away: the account panel says so.
        app.api.stop().await;
        page.open("/").await;
        let status = page
            .wait_for_text("#account-status", |text| !text.is_empty())
            .await;
        assert!(status.contains("cannot be reached"), "{status}");
        page.screenshot("api-down").await;

        // The session ends behind the page's back: the next action says to
        // log in again, with the way to do it.
        page.client
            .delete_cookie(COOKIE_NAME)
            .await
            .expect("delete the session cookie");
        page.type_into("#token-name", "too late").await;
        page.click("#token-create").await;
        let status = page
            .wait_for_text("#tokens-status", |text| text.contains("Log in again"))
            .await;
        assert!(status.contains("session has ended"), "{status}");
        let link = page.find("#tokens-status a.login-again").await;
        assert_eq!(
            link.attr("href").await.expect("href"),
            Some(format!("{}/login", app.url))
        );
        page.screenshot("session-ended").await;

        // A login that went wrong ends on a page that says what to do.
        page.open("/callback?oauth_token=unknown&oauth_verifier=unknown")
            .await;
        let title = page.text("h1").await;
        assert!(!title.is_empty());
        page.find("main a.button[href='/login']").await;
        page.screenshot("login-failed").await;
    })
    .await;
}

#[tokio::test]
async fn the_dashboard_is_labelled_and_works_from_the_keyboard() {
    let app = TestApp::spawn().await;
    Chrome::run("keyboard", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        page.wait_for_text("#account-name", |text| text == FAKE_USER_NAME)
            .await;

        let unlabelled = page
            .js(
                "return [...document.querySelectorAll('button, input:not([type=hidden]), select, [role=log]')]\
                   .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))\
                   .map((el) => el.outerHTML)",
                vec![],
            )
            .await;
        assert_eq!(unlabelled, json!([]), "every control has a name");

        // Tab lands on the skip link first, then the page's controls.
        page.js("document.activeElement.blur()", vec![]).await;
        page.find("body")
            .await
            .send_keys(&char::from(fantoccini::key::Key::Tab).to_string())
            .await
            .expect("Tab");
        let focused = page
            .js("return document.activeElement.className", vec![])
            .await;
        assert_eq!(focused, json!("skip"));

        // A proxy token made with the keyboard alone: type, Enter.
        page.type_into("#token-name", &format!("keyboard{}", char::from(fantoccini::key::Key::Enter)))
            .await;
        page.wait_for_text("#new-token", |text| text.starts_with("ocsp_"))
            .await;
        let focused = page
            .js("return document.activeElement.dataset.copy", vec![])
            .await;
        assert_eq!(
            focused,
            json!("new-token"),
            "focus moves to the new token's copy button"
        );
    })
    .await;
}

/// The fake summary's first application.
const HELLO_APP: &str = "app_11111111-1111-1111-1111-111111111111";

/// The `n`-th socket the fake API opened on `path`, once authenticated.
async fn upstream_socket(app: &TestApp, path: &str, n: usize) -> FakeSocket {
    let opened = app
        .api
        .wait_until(|api| {
            api.sockets()
                .iter()
                .filter(|socket| socket.path == path && socket.auth().is_some())
                .count()
                > n
        })
        .await;
    assert!(opened, "no socket {n} on {path}");
    app.api
        .sockets()
        .into_iter()
        .filter(|socket| socket.path == path)
        .nth(n)
        .expect("the socket just seen")
}

#[tokio::test]
async fn live_events_appear_newest_first_with_their_application() {
    let app = TestApp::spawn().await;
    Chrome::run("events", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        // Application names come from the summary.
        page.wait_for_text("#account-orgs", |text| text.contains("hello-world"))
            .await;
        page.wait_for_text("#events-status", |text| text == "Live")
            .await;
        let socket = upstream_socket(&app, "/v2/events/event-socket", 0).await;

        socket.send_event("DEPLOYMENT_ACTION_BEGIN", &json!({ "appId": HELLO_APP }));
        socket.send_event("DEPLOYMENT_SUCCESS", &json!({ "id": HELLO_APP }));

        page.wait_for_js(
            "two events on the page",
            "return document.querySelectorAll('#event-list li.event').length === 2",
        )
        .await;
        let shown = page
            .js(
                "return [...document.querySelectorAll('#event-list li.event')]\
                   .map((li) => [li.dataset.event, li.querySelector('.event-app').textContent, \
                                 li.querySelector('time').getAttribute('datetime')])",
                vec![],
            )
            .await;
        let shown = shown.as_array().expect("a list");
        assert_eq!(shown[0][0], "DEPLOYMENT_SUCCESS", "newest first");
        assert_eq!(shown[1][0], "DEPLOYMENT_ACTION_BEGIN");
        assert!(shown.iter().all(|event| event[1] == "hello-world"));
        assert!(
            shown
                .iter()
                .all(|event| event[2].as_str().is_some_and(|date| date.starts_with("20"))),
            "each event has its date: {shown:?}"
        );
        assert!(
            page.text("#event-list")
                .await
                .contains("Deployment success")
        );
        page.screenshot("events").await;
    })
    .await;
}

/// The fake summary's application in an organisation, not a personal space.
const ENGINE_APP: &str = "app_33333333-3333-3333-3333-333333333333";

/// Logs in and picks `app_id` in the live logs panel.
async fn open_logs_of(page: &Page, app: &TestApp, app_id: &str) {
    log_in_by_clicking(page, app).await;
    page.find(&format!("#logs-app option[value='{app_id}']"))
        .await;
    page.find("#logs-app")
        .await
        .select_by_value(app_id)
        .await
        .expect("pick the application");
}

/// The `n`-th v4 log stream request the fake API received (0-based).
async fn log_stream(app: &TestApp, n: usize) -> LogStreamRequest {
    let opened = app.api.wait_until(|api| api.log_streams().len() > n).await;
    assert!(
        opened,
        "no log stream request {n}: {:?}",
        app.api.log_streams()
    );
    app.api.log_streams()[n].clone()
}

/// How many times the live logs panel connected, as it says.
async fn connections(page: &Page) -> Option<String> {
    page.find("#logs-status")
        .await
        .attr("data-connections")
        .await
        .expect("attr")
}

/// The text of each cell of each line shown.
async fn shown_lines(page: &Page) -> Vec<Vec<String>> {
    let rows = page
        .js(
            "return [...document.querySelectorAll('#log-lines .log-line')]\
               .map((row) => [...row.children].map((cell) => cell.textContent))",
            vec![],
        )
        .await;
    serde_json::from_value(rows).expect("rows of cells")
}

/// Lets the browser save downloads into `dir`, without asking.
async fn allow_downloads(page: &Page, dir: &std::path::Path) {
    page.cdp(
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": dir.display().to_string() }),
    )
    .await;
}

/// The one finished download in `dir`: its name and text.
async fn downloaded(page: &Page, dir: &std::path::Path) -> (String, String) {
    page.wait_until("a finished download", || async {
        let entry = std::fs::read_dir(dir).ok()?.flatten().find(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.ends_with(".txt"))
        })?;
        let text = std::fs::read_to_string(entry.path()).ok()?;
        Some((entry.file_name().to_string_lossy().into_owned(), text))
    })
    .await
}

#[tokio::test]
async fn live_logs_stream_from_the_v4_api_and_resume_after_a_drop_without_duplicates() {
    let app = TestApp::spawn().await;
    Chrome::run("logs", app.url.clone(), |page| async move {
        open_logs_of(&page, &app, HELLO_APP).await;
        page.wait_for_text("#logs-status", |text| text == "Live")
            .await;
        let first = log_stream(&app, 0).await;
        assert_eq!(first.kind, LogKind::Application);
        assert_eq!(
            (first.owner_id.as_str(), first.app_id.as_str()),
            (FAKE_USER_ID, HELLO_APP),
            "a personal application's owner is the user"
        );
        assert_eq!(first.last_event_id, None);
        assert!(first.query.is_empty(), "no filter: {:?}", first.query);

        // Lines stream in, with time, instance, severity and message.
        app.api.write_app_log(HELLO_APP, AppLog::new("first line"));
        let mut warning = AppLog::new("second line");
        warning.severity = "WARNING".to_owned();
        app.api.write_app_log(HELLO_APP, warning);
        page.wait_for_text("#log-lines", |text| text.contains("second line"))
            .await;
        let rows = shown_lines(&page).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        let [time, instance, severity, message] = &rows[1][..] else {
            panic!("four cells: {rows:?}");
        };
        assert_eq!(time.matches(':').count(), 2, "a time of day: {time}");
        assert_eq!(
            instance,
            FAKE_INSTANCE_ID.split('-').next().unwrap_or_default()
        );
        assert_eq!(
            (severity.as_str(), message.as_str()),
            ("WARNING", "second line")
        );

        // Heartbeats keep the "connected" mark alive.
        page.wait_for_js(
            "a heartbeat",
            "return Number(document.getElementById('logs-status').dataset.heartbeats) >= 1",
        )
        .await;

        // Paused, lines wait; resumed, they show.
        page.click("#logs-pause").await;
        app.api
            .write_app_log(HELLO_APP, AppLog::new("while paused"));
        page.wait_for_text("#logs-pause", |text| text == "Resume (1 new)")
            .await;
        assert!(!page.text("#log-lines").await.contains("while paused"));
        page.click("#logs-pause").await;
        page.wait_for_text("#log-lines", |text| text.contains("while paused"))
            .await;

        // The API drops the stream: the page comes back with the last event
        // id, and gets what was written meanwhile, once.
        app.api.drop_log_streams();
        page.wait_for_text("#logs-status", |text| text.contains("Reconnecting"))
            .await;
        let last_seen = app
            .api
            .write_app_log(HELLO_APP, AppLog::new("during the drop"))
            - 1;
        let second = log_stream(&app, 1).await;
        assert_eq!(second.last_event_id, Some(last_seen.to_string()));
        page.wait_for_text("#logs-status", |text| text == "Live")
            .await;
        app.api
            .write_app_log(HELLO_APP, AppLog::new("after the reconnection"));
        let text = page
            .wait_for_text("#log-lines", |text| text.contains("after the reconnection"))
            .await;
        for line in [
            "first line",
            "second line",
            "while paused",
            "during the drop",
        ] {
            assert_eq!(text.matches(line).count(), 1, "{line} once: {text}");
        }
        assert_eq!(connections(&page).await, Some("2".to_owned()));
        page.screenshot("streaming").await;

        // The lines shown, downloaded as text.
        let dir = std::env::temp_dir().join(format!("ocs-downloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a download directory");
        allow_downloads(&page, &dir).await;
        page.click("#logs-download").await;
        let (name, saved) = downloaded(&page, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(name.starts_with("hello-world-logs-"), "{name}");
        let saved: Vec<&str> = saved.lines().collect();
        assert_eq!(saved.len(), 5, "{saved:?}");
        assert!(
            saved[1].starts_with("20")
                && saved[1].ends_with(&format!("{FAKE_INSTANCE_ID} WARNING second line")),
            "{saved:?}"
        );

        page.click("#logs-clear").await;
        page.wait_for_text("#log-lines", str::is_empty).await;
    })
    .await;
}

#[tokio::test]
async fn a_log_stream_silent_past_its_heartbeats_is_reopened_where_it_was() {
    let app = TestApp::spawn().await;
    app.api
        .set_log_heartbeat(std::time::Duration::from_secs(600));
    Chrome::run("logs-silent", app.url.clone(), |page| async move {
        open_logs_of(&page, &app, HELLO_APP).await;
        log_stream(&app, 0).await;
        let id = app
            .api
            .write_app_log(HELLO_APP, AppLog::new("the last word"));
        page.wait_for_text("#log-lines", |text| text.contains("the last word"))
            .await;

        // No heartbeat comes: the page gives up on the stream after 5 s.
        page.wait_for_text("#logs-status", |text| text.contains("No heartbeat"))
            .await;

        let reopened = log_stream(&app, 1).await;
        assert_eq!(reopened.last_event_id, Some(id.to_string()));
    })
    .await;
}

#[tokio::test]
async fn log_filters_reach_the_api_and_the_end_of_the_stream_says_why() {
    let app = TestApp::spawn().await;
    Chrome::run("logs-filters", app.url.clone(), |page| async move {
        open_logs_of(&page, &app, ENGINE_APP).await;
        let first = log_stream(&app, 0).await;
        assert_eq!(
            first.owner_id, FAKE_ORGANISATION_ID,
            "an organisation's application is the organisation's"
        );

        // Act: every filter the API offers, then Apply.
        page.js(
            "document.getElementById('logs-since').value = '2026-05-01T10:00:00';\
             document.getElementById('logs-until').value = '2026-05-01T11:30:00';",
            vec![],
        )
        .await;
        page.type_into("#logs-filter", "timeout").await;
        page.type_into("#logs-deployment", FAKE_DEPLOYMENT_ID).await;
        page.type_into("#logs-instance", &format!("i-other, {FAKE_INSTANCE_ID}"))
            .await;
        page.click("#logs-apply").await;

        // Assert: the stream is asked for again, with them.
        let filtered = log_stream(&app, 1).await;
        let local = |value: &str| {
            let page = page.clone();
            let value = value.to_owned();
            async move {
                page.js(
                    "return new Date(arguments[0]).toISOString()",
                    vec![json!(value)],
                )
                .await
            }
        };
        assert_eq!(
            filtered.param("since").map(Value::from),
            Some(local("2026-05-01T10:00:00").await)
        );
        assert_eq!(
            filtered.param("until").map(Value::from),
            Some(local("2026-05-01T11:30:00").await)
        );
        assert_eq!(filtered.param("filter"), Some("timeout"));
        assert_eq!(filtered.param("deploymentId"), Some(FAKE_DEPLOYMENT_ID));
        assert_eq!(filtered.params("instanceId"), ["i-other", FAKE_INSTANCE_ID]);
        assert_eq!(filtered.last_event_id, None, "new filters, a new stream");
        app.api
            .write_app_log(ENGINE_APP, AppLog::new("request timeout after 30 s"));
        page.wait_for_text("#log-lines", |text| text.contains("request timeout"))
            .await;

        // The API ends the stream: the page says why and stays where it is.
        app.api.end_log_streams("UNTIL_REACHED");
        let note = page
            .wait_for_text("#logs-note", |text| !text.is_empty())
            .await;
        assert!(note.contains("until reached"), "{note}");
        assert_eq!(page.text("#logs-status").await, "Ended");
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            app.api.log_streams().len(),
            2,
            "no reconnection after an end"
        );
        page.screenshot("ended").await;
    })
    .await;
}

#[tokio::test]
async fn the_access_logs_tab_shows_each_request() {
    let app = TestApp::spawn().await;
    Chrome::run("access-logs", app.url.clone(), |page| async move {
        open_logs_of(&page, &app, HELLO_APP).await;
        log_stream(&app, 0).await;

        page.click("#logs-tab-access").await;

        let access = log_stream(&app, 1).await;
        assert_eq!(access.kind, LogKind::Access);
        assert_eq!(
            (access.owner_id.as_str(), access.app_id.as_str()),
            (FAKE_USER_ID, HELLO_APP)
        );
        let text_filter = page.find("#logs-filter").await;
        assert!(
            !text_filter.is_displayed().await.expect("displayed"),
            "access logs take only the times"
        );
        page.wait_for_text("#logs-status", |text| text == "Live")
            .await;
        app.api.write_access_log(
            HELLO_APP,
            &AccessLog {
                method: "POST".to_owned(),
                path: "/api/orders".to_owned(),
                status: 502,
                source_ip: "203.0.113.9".to_owned(),
                duration_ms: 1234,
            },
        );
        page.wait_for_text("#log-lines", |text| text.contains("/api/orders"))
            .await;
        let rows = shown_lines(&page).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            rows[0][1..],
            ["POST", "/api/orders", "502", "203.0.113.9", "1234 ms"],
            "{rows:?}"
        );
        page.js(
            "document.getElementById('logs').scrollIntoView({ behavior: 'instant' })",
            vec![],
        )
        .await;
        page.screenshot("access").await;
    })
    .await;
}

#[tokio::test]
async fn live_logs_fall_back_to_the_websocket_relay_where_the_v4_stream_is_missing() {
    let app = TestApp::spawn().await;
    app.api.remove_v4_logs(true);
    Chrome::run("logs-fallback", app.url.clone(), |page| async move {
        let logs_path = format!("/v2/logs/logs-socket/{HELLO_APP}");
        open_logs_of(&page, &app, HELLO_APP).await;
        page.wait_for_text("#logs-status", |text| text == "Live")
            .await;
        let first = upstream_socket(&app, &logs_path, 0).await;
        assert_eq!(first.raw_query, None, "a first connection starts live");
        let v4_tries = app
            .api
            .requests()
            .iter()
            .filter(|request| request.path.starts_with("/v4/logs/"))
            .count();
        assert_eq!(v4_tries, 1, "the v4 stream was tried first, once");
        let note = page.text("#logs-note").await;
        assert!(note.contains("older log socket"), "{note}");

        // Lines stream in.
        first.send_log_line("first line");
        first.send_log_line("second line");
        page.wait_for_text("#log-lines", |text| text.contains("second line"))
            .await;

        // The upstream drops: the page reconnects, resuming from the last
        // line's time, and shows what comes next (and nothing twice).
        first.close(4002, "forced close");
        page.wait_for_text("#logs-status", |text| text.contains("Reconnecting"))
            .await;
        let second = upstream_socket(&app, &logs_path, 1).await;
        let query = second.raw_query.clone().unwrap_or_default();
        let since: Vec<(String, String)> =
            serde_urlencoded::from_str(&query).expect("a query string");
        assert!(
            since
                .iter()
                .any(|(name, value)| name == "since" && value.starts_with("20")),
            "resumes from the last line's time: {query}"
        );
        page.wait_for_text("#logs-status", |text| text == "Live")
            .await;
        second.send_log_line("after the reconnection");
        let text = page
            .wait_for_text("#log-lines", |text| text.contains("after the reconnection"))
            .await;
        assert_eq!(text.matches("first line").count(), 1, "{text}");
        assert_eq!(connections(&page).await, Some("2".to_owned()));
    })
    .await;
}

#[tokio::test]
async fn a_live_panel_refused_by_the_api_says_to_log_in_again_and_stops_retrying() {
    let app = TestApp::spawn().await;
    app.api.refuse_socket_auth(true);
    Chrome::run("events-refused", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;

        let status = page
            .wait_for_text("#events-status", |text| text.contains("Log in again"))
            .await;

        assert!(status.contains("refused your token"), "{status}");
        let link = page.find("#events-status a.login-again").await;
        assert_eq!(
            link.attr("href").await.expect("href"),
            Some(format!("{}/login", app.url))
        );
        let refused = app
            .api
            .sockets()
            .iter()
            .filter(|socket| socket.path == "/v2/events/event-socket")
            .count();
        assert_eq!(refused, 1, "no retry after a refusal");
        page.screenshot("refused").await;
    })
    .await;
}

#[tokio::test]
async fn a_token_made_with_a_preset_shows_its_scope_and_its_recent_calls_until_revoked() {
    let app = TestApp::spawn().await;
    Chrome::run("scoped-token", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        let status_path =
            format!("/api/v2/organisations/{FAKE_ORGANISATION_ID}/applications/{ENGINE_APP}");
        let service = reqwest::Client::new();
        let call_api = |method: reqwest::Method, token: String| {
            let request = service
                .request(method, app.at(&status_path))
                .bearer_auth(token);
            async move {
                request
                    .send()
                    .await
                    .expect("a call with the token")
                    .status()
            }
        };

        // Create, with the deploy preset, for the organisation's app.
        page.type_into("#token-name", "ci deploy").await;
        page.click("#preset-deploy").await;
        page.wait_for_js(
            "the organisations",
            "return !document.getElementById('token-org').disabled",
        )
        .await;
        page.find("#token-org")
            .await
            .select_by_value(FAKE_ORGANISATION_ID)
            .await
            .expect("pick the organisation");
        page.find("#token-app")
            .await
            .select_by_value(ENGINE_APP)
            .await
            .expect("pick the app");
        let redeploy = format!(
            "POST /v2/organisations/{FAKE_ORGANISATION_ID}/applications/{ENGINE_APP}/instances"
        );
        page.wait_for_text("#token-preview-rules", |text| text.contains(&redeploy))
            .await;
        page.screenshot("form").await;
        page.click("#token-create").await;
        let token = page
            .wait_for_text("#new-token", |text| text.starts_with("ocsp_"))
            .await;

        // Its scope is in the list.
        let listed = page
            .wait_for_text("#token-list", |text| text.contains("ci deploy"))
            .await;
        assert!(
            listed.contains("Deploy one application: difference-engine"),
            "{listed}"
        );
        assert!(
            !listed.contains(&redeploy),
            "its rules are folded: {listed}"
        );
        page.click("#token-list .preset-rules summary").await;
        let rules = page.text("#token-list .preset-rules").await;
        assert!(rules.contains(&redeploy), "{rules}");

        // Used from a plain HTTP client: one call allowed, one refused.
        assert_eq!(
            call_api(reqwest::Method::GET, token.clone()).await,
            StatusCode::OK
        );
        assert_eq!(
            call_api(reqwest::Method::DELETE, token.clone()).await,
            StatusCode::FORBIDDEN
        );

        // Both among its recent calls.
        page.click("#token-list button[data-calls]").await;
        let calls = page
            .wait_until("the two calls among the recent ones", || async {
                let text = page.text(".token-calls").await;
                if text.contains("DELETE") && text.contains("403") && text.contains("200") {
                    return Some(text);
                }
                page.click(".token-calls button[data-refresh-calls]").await;
                None
            })
            .await;
        assert!(calls.contains(&status_path["/api".len()..]), "{calls}");
        assert!(calls.contains("127.0.0.1"), "{calls}");
        page.scroll_to(".token-calls").await;
        page.screenshot("calls").await;

        // Revoke: refused from then on.
        page.click("#token-list button[data-revoke]").await;
        page.click("#token-list button[data-revoke]").await;
        page.wait_for_text("#tokens-status", |text| text.contains("revoked"))
            .await;
        assert_eq!(
            call_api(reqwest::Method::GET, token).await,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn custom_rules_are_checked_by_the_server_which_names_the_bad_line() {
    let app = TestApp::spawn().await;
    Chrome::run("custom-scope", app.url.clone(), |page| async move {
        log_in_by_clicking(&page, &app).await;
        page.type_into("#token-name", "status page").await;
        page.click("#preset-custom").await;

        // A bad rule on the third line (the second is blank).
        page.type_into("#token-rules", "GET /v2/self\n\nFETCH /v2/summary")
            .await;
        page.click("#token-create").await;
        let error = page
            .wait_for_text("#token-rules-error", |text| !text.is_empty())
            .await;
        assert!(error.starts_with("Line 3: `FETCH /v2/summary`"), "{error}");
        assert_eq!(
            page.js(
                "return document.getElementById('token-rules').getAttribute('aria-invalid')",
                vec![]
            )
            .await,
            json!("true")
        );
        page.screenshot("bad-rule").await;

        // Fixed, with the events socket: created and shown as written.
        page.find("#token-rules")
            .await
            .clear()
            .await
            .expect("clear the rules");
        page.type_into("#token-rules", "GET /v2/self\nGET,HEAD /v2/summary")
            .await;
        page.click("#token-events").await;
        page.click("#token-create").await;
        page.wait_for_text("#new-token", |text| text.starts_with("ocsp_"))
            .await;
        let listed = page
            .wait_for_text("#token-list", |text| text.contains("status page"))
            .await;
        assert!(listed.contains("2 rules"), "{listed}");
        assert!(listed.contains("GET,HEAD /v2/summary"), "{listed}");
        assert!(listed.contains("Also live events."), "{listed}");
        page.scroll_to("#token-list").await;
        page.screenshot("custom-listed").await;
        assert!(
            page.find("#token-rules-error")
                .await
                .text()
                .await
                .unwrap_or_default()
                .is_empty()
        );
    })
    .await;
}
