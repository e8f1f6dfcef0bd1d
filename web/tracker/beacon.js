// Beacon's browser tracker, served by the gateway at /js/beacon.js. No dependencies, no
// cookies, no storage. Built (minified) into gateway/assets/beacon.js by web/build.mjs.
//
//   <script defer src="https://analytics.example/js/beacon.js" data-key="bk_ingest_..."></script>
//
// Attributes (all optional but one of data-key and data-domain):
//   data-key             the tenant's public ingest key
//   data-domain          the site's domain, registered with AdminService.SetDomains (no key)
//   data-api             where events go (default: /api/event next to this script)
//   data-outbound-links  send "Outbound Link: Click" (props.url) for links to other hosts
//   data-file-downloads  send "File Download" (props.url) for links to files
//   data-file-types      file extensions counted as downloads, comma-separated
//   data-respect-dnt     send nothing when the browser asks not to be tracked
//   data-manual          no automatic pageviews: call beacon("pageview") yourself
//
// Custom events: beacon("signup", { props: { plan: "pro" }, revenue: { amount: 29, currency: "EUR" } }).
// Calls made before the script loads are queued by this snippet and sent once it runs:
//   <script>window.beacon = window.beacon || function () { (beacon.q = beacon.q || []).push(arguments) }</script>
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var data = function (name) {
    return script.getAttribute("data-" + name);
  };
  var has = function (name) {
    return script.hasAttribute("data-" + name);
  };

  var key = data("key");
  var endpoint = data("api") || new URL("/api/event", script.src).href;
  if (key) endpoint += (endpoint.indexOf("?") < 0 ? "?" : "&") + "key=" + encodeURIComponent(key);
  var domain = data("domain") || location.hostname;
  var fileTypes = (
    data("file-types") ||
    "pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg"
  )
    .split(",")
    .map(function (type) {
      return type.trim().toLowerCase();
    });
  var ignored =
    has("respect-dnt") && (navigator.doNotTrack === "1" || window.doNotTrack === "1");

  function eventId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 14);
  }

  // Every event gets its own id: a body delivered twice counts once.
  function send(body) {
    if (ignored) return;
    body.id = eventId();
    body.domain = domain;
    body.url = body.url || location.href;
    var text = JSON.stringify(body);
    if (navigator.sendBeacon && navigator.sendBeacon(endpoint, text)) return;
    try {
      fetch(endpoint, { method: "POST", body: text, keepalive: true }).catch(function () {});
    } catch (e) {}
  }

  // Engagement: the deepest scroll and the time the page was visible since the last report,
  // sent when the page is hidden or left.
  var page = null;
  // A page is its path and query: jumping to an anchor (#faq) is no new pageview.
  var pageKey = null;
  var deepest = 0;
  var engaged = 0;
  var visibleSince = null;

  function scrollDepth() {
    var root = document.documentElement;
    var body = document.body || root;
    var height = Math.max(root.scrollHeight, body.scrollHeight, root.offsetHeight, 1);
    var seen = (window.scrollY || root.scrollTop) + window.innerHeight;
    return Math.min(100, Math.round((seen / height) * 100));
  }

  function pause() {
    if (visibleSince !== null) engaged += Date.now() - visibleSince;
    visibleSince = null;
  }

  function resume() {
    if (document.visibilityState === "visible" && visibleSince === null) visibleSince = Date.now();
  }

  function reportEngagement() {
    pause();
    if (page && engaged > 0) {
      send({ name: "engagement", url: page, sd: deepest, e: engaged });
    }
    engaged = 0;
    resume();
  }

  function pageview() {
    if (location.pathname + location.search === pageKey) return;
    if (page) reportEngagement();
    page = location.href;
    pageKey = location.pathname + location.search;
    deepest = scrollDepth();
    engaged = 0;
    visibleSince = null;
    resume();
    send({ name: "pageview", referrer: document.referrer || null });
  }

  function track(name, options) {
    if (name === "pageview") return pageview();
    options = options || {};
    send({ name: name, props: options.props || null, revenue: options.revenue || null });
  }

  // Links to other hosts and to files, sent before the browser leaves the page.
  function onClick(event) {
    var link = event.target && event.target.closest && event.target.closest("a[href]");
    if (!link) return;
    var url = new URL(link.href, location.href);
    var extension = url.pathname.split(".").pop().toLowerCase();
    if (has("file-downloads") && url.pathname.indexOf(".") >= 0 && fileTypes.indexOf(extension) >= 0) {
      track("File Download", { props: { url: url.href } });
    } else if (has("outbound-links") && url.host !== location.host && /^https?:$/.test(url.protocol)) {
      track("Outbound Link: Click", { props: { url: url.href } });
    }
  }

  window.addEventListener("scroll", function () {
    deepest = Math.max(deepest, scrollDepth());
  }, { passive: true });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") reportEngagement();
    else resume();
  });
  window.addEventListener("pagehide", reportEngagement);
  document.addEventListener("click", onClick, true);
  document.addEventListener("auxclick", function (event) {
    if (event.button === 1) onClick(event);
  }, true);

  var queued = (window.beacon && window.beacon.q) || [];
  window.beacon = track;

  if (!has("manual")) {
    // Single-page apps: a pushState or back/forward to another URL is a new pageview.
    var push = history.pushState;
    history.pushState = function () {
      push.apply(this, arguments);
      pageview();
    };
    window.addEventListener("popstate", pageview);
    pageview();
  }
  for (var i = 0; i < queued.length; i++) track.apply(null, queued[i]);
})();
