//! Test guest: returns text that is not a ToolOutput (bypasses the SDK's encoder).
struct Invalid;

impl pulsara_policy_sdk::bindings::Guest for Invalid {
    fn abi_version() -> u32 {
        pulsara_policy_sdk::ABI_VERSION
    }
    fn run(_input: String) -> Result<String, String> {
        Ok("{\"result\": 42, \"actions\": \"not a list\"".to_owned())
    }
}

pulsara_policy_sdk::bindings::__export_tool_world!(Invalid with_types_in pulsara_policy_sdk::bindings);
