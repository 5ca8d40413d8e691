//! sea-orm entities, one module per table (see `migrations/`). Times are epoch milliseconds.

pub mod request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "requests")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub resource: String,
        pub requester: String,
        pub duration_secs: i64,
        pub reason: String,
        pub state: String,
        pub open_key: Option<String>,
        pub approvals_needed: i32,
        pub auto_approved: bool,
        pub channel: String,
        pub card_ts: Option<String>,
        pub created_at: i64,
        pub decided_at: Option<i64>,
        pub decided_by: Option<String>,
        pub decision_note: Option<String>,
        pub updated_at: i64,
        /// On a bundle's lead: `{"name": …, "resources": […]}` (JSON).
        pub bundle: Option<String>,
        /// On a bundle's other requests: the lead's id.
        pub bundle_of: Option<i32>,
        /// On an extension (`/jit extend`): the request whose grant it lengthens.
        pub extends: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_one = "super::grant::Entity")]
        Grant,
    }

    impl Related<super::grant::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Grant.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod approval {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "approvals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub request_id: i32,
        pub approver: String,
        pub decision: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grants")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub request_id: i32,
        pub provider_name: String,
        pub provider: String,
        pub grant_shape: String,
        pub identity: String,
        pub already_held: Option<bool>,
        pub granted_at: Option<i64>,
        pub expires_at: Option<i64>,
        pub end_reason: Option<String>,
        pub ended_at: Option<i64>,
        pub last_error: Option<String>,
        /// Whose approvals counted when it was approved, comma-separated user IDs.
        pub approved_by: Option<String>,
        /// What the grant gives at the target, as a digest: grants with the same key share one
        /// access there (see `store::holds`).
        pub access_key: Option<String>,
        /// `establishing`, `granting`, `held` or `releasing` while this grant relies on jitbot's
        /// access at the target; none otherwise.
        pub hold: Option<String>,
        /// The grant that still held the same access when this one ended.
        pub handed_to: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::request::Entity",
            from = "Column::RequestId",
            to = "super::request::Column::Id"
        )]
        Request,
    }

    impl Related<super::request::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Request.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub kind: String,
        pub request_id: Option<i32>,
        pub payload: String,
        pub dedupe_key: Option<String>,
        pub run_at: i64,
        pub attempts: i32,
        pub locked_until: Option<i64>,
        pub done_at: Option<i64>,
        pub last_error: Option<String>,
        pub created_at: i64,
        pub lane: String,
        pub queue_key: String,
        pub locked_by: Option<String>,
        pub outcome: Option<String>,
        pub paced: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub at: i64,
        pub request_id: Option<i32>,
        pub actor: String,
        pub action: String,
        pub detail: String,
        /// Place in the hash chain, once sealed.
        pub seq: Option<i64>,
        /// SHA-256 (hex) of the previous link's hash and this event, once sealed.
        pub hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_head {
    use sea_orm::entity::prelude::*;

    /// The last link of the audit chain (one row, id 1).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub last_seq: i64,
        pub last_hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod page {
    use sea_orm::entity::prelude::*;

    /// A DM that paged someone about a request (escalation or reminder).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub request_id: i32,
        pub user_id: String,
        pub channel: String,
        pub ts: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
