//! The routes as the runtime sees them: an id per route, and each route's resolved timing
//! (ceiling and stall timeout against the server's default) and labels. Built once at start
//! from the app; the pool, the watchdog, connections and metrics all read the same table.

use std::time::Duration;

/// The index of a route in its app (and in the [`RouteTable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteId(u32);

impl RouteId {
    pub fn new(index: usize) -> RouteId {
        RouteId(u32::try_from(index).expect("fewer than 2^32 routes"))
    }
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One route, resolved: what it is called and how long its requests may take.
#[derive(Clone, Debug)]
pub(crate) struct RouteInfo {
    /// `GET`, `POST`, …
    #[allow(dead_code)] // for per-method metric labels
    pub method: Box<str>,
    /// The pattern it was declared with (`/items/:id`): the `route` of logs and metrics.
    pub pattern: Box<str>,
    /// The absolute ceiling of its requests.
    pub timeout: Duration,
    /// The longest a request may go without reporting progress, if watched for stalls.
    pub stall: Option<Duration>,
}

/// Every route of a server, indexed by [`RouteId`].
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<RouteInfo>,
    /// The last entry stands for requests the router refused that go through the pool anyway
    /// (the app has hooks to run for them).
    unmatched: bool,
}

impl RouteTable {
    /// The label of requests that matched no route.
    pub const UNMATCHED: &'static str = "unmatched";

    pub fn new(routes: Vec<RouteInfo>) -> Self {
        RouteTable { routes, unmatched: false }
    }

    /// Adds the entry for requests the router refused, which run the app's hooks on a worker
    /// under `timeout` (the server's default).
    pub fn with_unmatched(mut self, timeout: Duration) -> Self {
        let info = RouteInfo { method: "*".into(), pattern: Self::UNMATCHED.into(), timeout, stall: None };
        self.routes.push(info);
        self.unmatched = true;
        self
    }

    /// The entry for requests the router refused, if there is one.
    pub fn unmatched(&self) -> Option<RouteId> {
        self.unmatched.then(|| RouteId::new(self.routes.len() - 1))
    }

    /// Whether `id` is one of the app's own routes (not the entry for refused requests).
    pub fn is_app_route(&self, id: RouteId) -> bool {
        Some(id) != self.unmatched()
    }

    pub fn get(&self, id: RouteId) -> &RouteInfo {
        &self.routes[id.index()]
    }

    /// The route's pattern, or [`UNMATCHED`](Self::UNMATCHED).
    pub fn label(&self, id: Option<RouteId>) -> &str {
        id.map_or(Self::UNMATCHED, |id| &self.get(id).pattern)
    }

    /// `Some(id)` for one of the app's own routes, `None` for the entry for refused requests
    /// (metrics count those as unmatched).
    pub fn app_route(&self, id: RouteId) -> Option<RouteId> {
        self.is_app_route(id).then_some(id)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (RouteId, &RouteInfo)> {
        self.routes.iter().enumerate().map(|(i, r)| (RouteId::new(i), r))
    }
}
