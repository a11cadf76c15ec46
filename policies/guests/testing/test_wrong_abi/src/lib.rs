//! Test guest: claims an ABI version the host does not speak.
struct Future;

impl pulsara_policy_sdk::bindings::Guest for Future {
    fn abi_version() -> u32 {
        pulsara_policy_sdk::ABI_VERSION + 1000
    }
    fn run(_input: String) -> Result<String, String> {
        Ok("{\"result\":\"from the future\"}".to_owned())
    }
}

pulsara_policy_sdk::bindings::__export_tool_world!(Future with_types_in pulsara_policy_sdk::bindings);
