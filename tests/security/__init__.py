"""The security suite: issue 23's probes of a real deployment, each expecting the attack refused.

One deployment (``deployment.py``, session-scoped): a simulator and a pitrixd as separate
processes; tokens for ``operator`` (admin), ``alice`` and ``bob``; runtime ``sim`` (a metadata
cluster per owner) and runtime ``shared`` (``placement = "per-runtime"``); clusters a1/b1 on
``sim`` and a2/b2 on ``shared``, one web node each; b1 carries a password parameter. Refused means
4xx (never 500) or, for a store or a TLS port, no HTTP answer at all (connection refused, handshake
failure). Nothing here is xfail: on a tree with a hole, its case fails. docs/security.md is the
contract these cases check.

Finding 1, metadata etcd (test_metadata_etcd.py), from alice's node, against bob's per-owner and
the shared metadata VM, each in plain HTTP, TLS without a certificate, and TLS with the node's own
agent certificate:
  test_metadata_etcd_client_port_reads_nothing       range over /clusters/<victim>/ and all keys (:2379)
  test_metadata_etcd_takes_no_write                  put /clusters/<victim>/cmd/<iid>/... (:2379)
  test_metadata_etcd_peer_port_answers_no_stranger   GET /members, /version (:2380)
  Added classes: test_metad_management_port_refuses_an_instance (9611 with an agent certificate or
  none), test_forwarded_for_does_not_change_who_an_instance_is (X-Forwarded-For under mTLS),
  test_an_instance_certificate_opens_no_other_owners_metad.
Finding 2, metad starvation: test_metad_starvation.py (written separately).
Findings 3 and 4, bootstrap and keys (test_bootstrap.py):
  test_a_used_bootstrap_token_is_refused             the token from agent.toml/userdata, replayed: 4xx
  test_files_holding_a_token_or_key_are_private      every file holding the token, and agent.key: 0600
  test_metadata_userdata_carries_no_private_key      no "PRIVATE KEY" in a metadata VM's userdata
                                                     (here-documents base64-decoded too)
  test_metadata_vm_keys_are_private, test_instance_userdata_carries_no_private_key (added)
Findings 5, 6 and part of 9, admin API (test_admin_api.py):
  test_another_owners_version_never_shadows_an_app   alice's "shop" stays her 1.0.0 after bob's 1.0.1
  test_an_owner_does_not_see_another_owners_apps     bob neither lists nor reads alice's app
  test_token_less_api_refuses_a_cross_origin_text_plain_post   (README's token-less pitrixd) 4xx,
                                                     nothing created; cross-origin JSON and
                                                     text/plain without Origin too
  test_token_less_api_refuses_a_foreign_host_name    Host: evil.example → 4xx (DNS rebinding)
  test_tokened_api_refuses_forged_origin_and_host    the same with an admin token
  test_access_token_in_the_query_opens_no_ordinary_endpoint   ?access_token= → 400/401 off streams and /ui
  test_an_oversized_app_spec_is_413                  7.5 MB spec → 413
  test_deeply_nested_json_is_400                     on /v1/apps, /v1/clusters, /v1/runtimes
  Held classes, kept: test_another_owners_cluster_is_404,
  test_a_cluster_cannot_link_to_another_owners_cluster,
  test_an_owners_event_stream_carries_no_other_owners_cluster,
  test_an_owner_cannot_define_runtimes_or_act_for_another.
  Controls: test_token_less_api_still_serves_its_own_client,
  test_access_token_in_the_query_opens_an_event_stream.
Finding 7, another local user (test_local_user.py; needs root to create the user, else skipped):
  test_local_user_gets_nothing_from_pitrixds_etcd    every key range, plain and TLS without a certificate
  test_local_user_gets_nothing_from_a_metadata_etcd  the same against each metadata VM's etcd
  test_local_user_reads_no_secret_file_of_pitrixd    no readable file under the state dir holds a key,
                                                     token, credential or password; etcd data unreadable
Finding 8, legacy source-IP metad (test_legacy_metad.py; a standalone metad over the test etcd):
  test_legacy_instance_cannot_read_another_clusters_data    GET :9611/v1/data/clusters/<other>
  test_legacy_instance_cannot_remap_another_instance        PUT /v1/mapping/<victim>; the stranger's /self
  test_legacy_forwarded_for_counts_only_from_the_trusted_proxy (added); control: ..._still_read_their_own
Finding 9, metad input (test_metad_input.py):
  test_nested_status_body_is_400                     PUT /self/status/{applied,health,heartbeat}: 400
  test_nested_bootstrap_body_without_a_certificate_is_400
  test_a_result_for_a_command_nobody_posted_is_refused
  test_an_oversized_body_to_metad_is_413, test_a_shared_metad_shows_an_instance_nothing_of_another_owner
  (held, kept); control: test_an_instance_still_reports_its_own_status.
Finding 9, secrets (test_secrets.py):
  test_cluster_views_show_no_password                GET /v1/clusters[/{cid}[/jobs|/wait]] as owner and admin
  test_runtime_views_show_no_credentials             GET /v1/runtimes[/{name}]
  test_event_stream_shows_no_secret                  the admin's /v1/events since before the clusters
  test_pitrixd_stores_secrets_sealed                 no secret in clear in any byte of pitrixd's state dir
  test_pitrixd_logs_no_secret, test_no_secret_in_any_process_command_line (added)
"""
