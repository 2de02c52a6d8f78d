namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>The lab cannot run here. Thrown (never turned into a skip) so that CI fails loudly.</summary>
public sealed class LabUnavailableException(string message) : Exception(message);

/// <summary>Checks, before anything is created, that the lab can run: root, and the tools it drives.</summary>
public static class LabPreflight
{
    public static readonly IReadOnlyList<string> RequiredTools = ["ip", "nft", "socat", "bash", "setsid"];

    private static readonly Dictionary<string, string> Packages = new()
    {
        ["ip"] = "iproute2",
        ["nft"] = "nftables",
        ["socat"] = "socat",
        ["bash"] = "bash",
        ["setsid"] = "util-linux",
    };

    /// <summary>Every reason the lab cannot run (empty when it can).</summary>
    public static IReadOnlyList<string> Problems(IEnumerable<string> tools, bool isRoot, Func<string, string?> which)
    {
        var problems = new List<string>();
        if (!isRoot)
        {
            problems.Add("the network lab must run as root (it creates network namespaces and loads nftables rulesets)");
        }

        foreach (var tool in tools)
        {
            if (which(tool) is null)
            {
                var pkg = Packages.GetValueOrDefault(tool, tool);
                problems.Add($"'{tool}' was not found in {LabProcess.ChildPath} (install the '{pkg}' package)");
            }
        }

        return problems;
    }

    /// <summary>Throws <see cref="LabUnavailableException"/> listing every problem found.</summary>
    public static void EnsureReady()
    {
        var problems = Problems(RequiredTools, LabProcess.GetEuid() == 0, LabProcess.Which).ToList();
        if (problems.Count == 0)
        {
            var ipNetns = LabProcess.Run(["ip", "netns", "list"], timeout: TimeSpan.FromSeconds(10));
            if (!ipNetns.Success)
            {
                problems.Add($"'ip netns list' failed: {ipNetns.StdErr.Trim()}");
            }

            var nft = LabProcess.Run(["nft", "--version"], timeout: TimeSpan.FromSeconds(10));
            if (!nft.Success)
            {
                problems.Add($"'nft --version' failed: {nft.StdErr.Trim()}");
            }
        }

        if (problems.Count > 0)
        {
            throw new LabUnavailableException(
                "The QubesFirewall network lab cannot run on this machine:\n  - " + string.Join("\n  - ", problems) +
                "\nRun the lab as root on Linux with: apt-get install -y iproute2 nftables socat. " +
                "Lab tests fail instead of skipping so that a CI without the lab is noticed.");
        }
    }
}
