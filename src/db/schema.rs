//! Hand-kept schema, portable across SQLite and PostgreSQL: text ids, naive-UTC timestamps,
//! JSON as text. Keep it in step with both migration folders.

diesel::table! {
    admin_keys (id) {
        id -> Text,
        name -> Text,
        key_hash -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        holder -> Text,
        role -> Text,
        created_by -> Nullable<Text>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    sites (id) {
        id -> Text,
        name -> Text,
        address -> Text,
        time_zone -> Text,
        dwell_hours -> Nullable<Integer>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    carriers (id) {
        id -> Text,
        code -> Text,
        name -> Text,
        api_key_hash -> Text,
        courier_code_hash -> Nullable<Text>,
        webhook_url -> Nullable<Text>,
        webhook_secret_enc -> Text,
        dwell_hours -> Nullable<Integer>,
        webhook_rate_per_sec -> Integer,
        webhook_concurrency -> Integer,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        previous_webhook_secret_enc -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    lockers (id) {
        id -> Text,
        site_id -> Text,
        name -> Text,
        location -> Text,
        credential_hash -> Text,
        code_salt -> Text,
        active -> Bool,
        firmware_version -> Nullable<Text>,
        protocol_version -> Nullable<Text>,
        connected -> Bool,
        last_seen_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sections (id) {
        id -> Text,
        locker_id -> Text,
        carrier_id -> Text,
        exclusive -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    compartments (id) {
        id -> Text,
        locker_id -> Text,
        number -> Integer,
        size -> Text,
        accessible -> Bool,
        status -> Text,
        section_id -> Nullable<Text>,
        fault -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    recipients (id) {
        id -> Text,
        site_id -> Text,
        name -> Text,
        unit -> Text,
        phone -> Nullable<Text>,
        email -> Nullable<Text>,
        push_target -> Nullable<Text>,
        channels -> Text,
        vacation_until -> Nullable<Timestamp>,
        needs_accessible -> Bool,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    parcels (id) {
        id -> Text,
        carrier_id -> Text,
        tracking_number -> Text,
        site_id -> Text,
        recipient_id -> Nullable<Text>,
        locker_id -> Nullable<Text>,
        compartment_id -> Nullable<Text>,
        size -> Text,
        state -> Text,
        pickup_code_hash -> Nullable<Text>,
        qr_token_hash -> Nullable<Text>,
        collection_code_hash -> Nullable<Text>,
        reserved_until -> Nullable<Timestamp>,
        deposited_at -> Nullable<Timestamp>,
        pickup_deadline -> Nullable<Timestamp>,
        picked_up_at -> Nullable<Timestamp>,
        expired_at -> Nullable<Timestamp>,
        returned_at -> Nullable<Timestamp>,
        cancelled_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    parcel_events (id) {
        id -> Text,
        parcel_id -> Text,
        kind -> Text,
        from_state -> Nullable<Text>,
        to_state -> Nullable<Text>,
        actor -> Text,
        detail -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_outbox (id) {
        id -> Text,
        carrier_id -> Text,
        parcel_id -> Nullable<Text>,
        event_type -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Text,
        outbox_id -> Text,
        attempted_at -> Timestamp,
        status_code -> Nullable<Integer>,
        error -> Nullable<Text>,
        duration_ms -> Integer,
    }
}

diesel::table! {
    notification_outbox (id) {
        id -> Text,
        parcel_id -> Text,
        recipient_id -> Nullable<Text>,
        kind -> Text,
        channel -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    notification_attempts (id) {
        id -> Text,
        notification_id -> Text,
        channel -> Nullable<Text>,
        outcome -> Text,
        error -> Nullable<Text>,
        attempted_at -> Timestamp,
    }
}

diesel::table! {
    deadlines (id) {
        id -> Text,
        parcel_id -> Text,
        kind -> Text,
        due_at -> Timestamp,
        fired_at -> Nullable<Timestamp>,
        cancelled_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    inbound_events (carrier_id, event_id) {
        carrier_id -> Text,
        event_id -> Text,
        response_status -> Integer,
        response_body -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    faults (id) {
        id -> Text,
        locker_id -> Text,
        compartment_number -> Nullable<Integer>,
        kind -> Text,
        detail -> Text,
        created_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    device_calls (locker_id, msg_id) {
        locker_id -> Text,
        msg_id -> Text,
        fingerprint -> Text,
        answer -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    code_guesses (locker_id, kind) {
        locker_id -> Text,
        kind -> Text,
        allowance_at -> Timestamp,
        level -> Integer,
        locked_until -> Nullable<Timestamp>,
        last_failure_at -> Timestamp,
    }
}

diesel::table! {
    remote_opens (id) {
        id -> Text,
        admin_key_id -> Text,
        holder -> Text,
        locker_id -> Text,
        compartment -> Integer,
        parcel_id -> Nullable<Text>,
        reason -> Text,
        outcome -> Text,
        detail -> Text,
        requested_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        decided_by -> Nullable<Text>,
        decided_by_holder -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    lockouts (id) {
        id -> Text,
        locker_id -> Text,
        kind -> Text,
        level -> Integer,
        started_at -> Timestamp,
        locked_until -> Timestamp,
    }
}

diesel::table! {
    locker_journal (locker_id, seq) {
        locker_id -> Text,
        seq -> BigInt,
        kind -> Text,
        compartment -> Nullable<Integer>,
        parcel_id -> Nullable<Text>,
        device_at -> Text,
        occurred_at -> Timestamp,
        outcome -> Text,
        detail -> Text,
        received_at -> Timestamp,
    }
}

diesel::table! {
    local_lists (locker_id) {
        locker_id -> Text,
        version -> BigInt,
        epoch -> Integer,
        salt -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    local_list_entries (id) {
        id -> Text,
        locker_id -> Text,
        parcel_id -> Nullable<Text>,
        carrier_id -> Nullable<Text>,
        kind -> Text,
        compartment -> Nullable<Integer>,
        code_hash -> Text,
        sealed -> Nullable<Text>,
        tag -> Nullable<Integer>,
        verifier -> Nullable<Text>,
        expires_at -> Timestamp,
        added_version -> Nullable<BigInt>,
        removed_version -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    locker_size_classes (locker_id, size) {
        locker_id -> Text,
        size -> Text,
        length_mm -> Integer,
        width_mm -> Integer,
        height_mm -> Integer,
        max_weight_g -> Integer,
    }
}

diesel::table! {
    carrier_quotas (locker_id, carrier_id, size) {
        locker_id -> Text,
        carrier_id -> Text,
        size -> Text,
        max_in_use -> Integer,
    }
}

diesel::table! {
    locker_carriers (locker_id, carrier_id) {
        locker_id -> Text,
        carrier_id -> Text,
    }
}

diesel::table! {
    alerts (id) {
        id -> Text,
        locker_id -> Text,
        compartment -> Nullable<Integer>,
        kind -> Text,
        detail -> Text,
        created_at -> Timestamp,
        acknowledged_at -> Nullable<Timestamp>,
        acknowledged_by -> Nullable<Text>,
        delivery -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(lockers -> sites (site_id));
diesel::joinable!(sections -> lockers (locker_id));
diesel::joinable!(sections -> carriers (carrier_id));
diesel::joinable!(compartments -> lockers (locker_id));
diesel::joinable!(compartments -> sections (section_id));
diesel::joinable!(recipients -> sites (site_id));
diesel::joinable!(parcels -> carriers (carrier_id));
diesel::joinable!(parcels -> recipients (recipient_id));
diesel::joinable!(parcel_events -> parcels (parcel_id));
diesel::joinable!(webhook_attempts -> webhook_outbox (outbox_id));
diesel::joinable!(faults -> lockers (locker_id));
diesel::joinable!(deadlines -> parcels (parcel_id));

diesel::allow_tables_to_appear_in_same_query!(
    admin_keys,
    sites,
    carriers,
    lockers,
    sections,
    compartments,
    recipients,
    parcels,
    parcel_events,
    webhook_outbox,
    webhook_attempts,
    notification_outbox,
    deadlines,
    inbound_events,
    faults,
    device_calls,
    remote_opens,
    code_guesses,
    lockouts,
    locker_journal,
    local_lists,
    local_list_entries,
    locker_size_classes,
    carrier_quotas,
    locker_carriers,
    alerts,
);
