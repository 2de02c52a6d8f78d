using System.Security.Cryptography;
using System.Text;

namespace QubesFirewall.Engine.Agent;

/// <summary>
/// The agent that runs in each qube on the way of a forward or a link (a POSIX sh script shipped in the module),
/// and the small hook files that start it: where they live and what they contain. Install-QubeFirewallAgent
/// is the one place that writes them into qubes.
/// </summary>
public static class AgentScript
{
    /// <summary>The agent's version: the first 12 hex digits of its text's SHA-256, recorded on the qube as <c>qubesfirewall.agent</c>.</summary>
    public static string Version { get; } = ComputeVersion();

    /// <summary>The feature that records the agent version installed in a qube (dom0 knows it without reading the qube).</summary>
    public const string VersionFeature = "qubesfirewall.agent";

    /// <summary>Where the agent itself is kept: below /rw/config (persistent), outside the hook folders.</summary>
    public const string AgentPath = "/rw/config/qubesfw-agent";

    /// <summary>The hook of network qubes: qubes-firewall runs the executables of this folder at each start, one at a time.</summary>
    public const string FirewallHookPath = "/rw/config/qubes-firewall.d/90-qubesfw-agent";

    /// <summary>The hook of other qubes: rc.local sources <c>rc.local.d/*.rc</c> at boot.</summary>
    public const string RcLocalHookPath = "/rw/config/rc.local.d/90-qubesfw-agent.rc";

    /// <summary>The status file the agent writes (dom0 reads it back only through the bounded reader, with a strict grammar).</summary>
    public const string StatusPath = "/run/qubesfw/status";

    /// <summary>The unit the hook starts the agent as (<c>systemd-run --unit=</c>).</summary>
    public const string UnitName = "qubesfw-agent";

    /// <summary>The agent's text, with its version.</summary>
    public static string Text { get; } = Load().Replace("@VERSION@", Version, StringComparison.Ordinal);

    /// <summary>The hook file for a qube: a network qube's firewall hook (executed), or an rc.local.d part (sourced).</summary>
    public static string HookText(bool firewallHook, string agentPath = AgentPath) => firewallHook
        ? $"#!/bin/sh\n# QubesFirewall agent hook {Version}: starts the agent detached and returns at once.\nexec {agentPath} hook\n"
        : $"# QubesFirewall agent hook {Version}: starts the agent detached and returns at once (sourced by rc.local).\n{agentPath} hook\n";

    private static string Load()
    {
        using var stream = typeof(AgentScript).Assembly.GetManifestResourceStream("QubesFirewall.Engine.Agent.qubesfw-agent.sh")
            ?? throw new InvalidOperationException("the agent script is missing from the engine assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd().Replace("\r\n", "\n", StringComparison.Ordinal);
    }

    private static string ComputeVersion() =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(Load())))[..12].ToLowerInvariant();
}
