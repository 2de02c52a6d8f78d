using System.Globalization;
using System.Text.RegularExpressions;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// Finds and removes what killed lab runs left behind: namespaces named <c>qfw&lt;pid&gt;n&lt;k&gt;-*</c> and work
/// folders <c>/tmp/qfwlab-qfw&lt;pid&gt;n&lt;k&gt;-</c> whose test process is gone. Namespaces of a live test process
/// (another run in parallel) are left alone, and so are this process's live topologies.
/// </summary>
public static class LabJanitor
{
    public const string WorkDirPrefix = "qfwlab-";

    private static readonly Regex LabName = new(@"^(qfw(\d+)n\d+-)", RegexOptions.CultureInvariant);
    private static readonly HashSet<string> LivePrefixes = [];
    private static readonly Lock Sync = new();

    internal static void Register(string prefix)
    {
        lock (Sync)
        {
            LivePrefixes.Add(prefix);
        }
    }

    internal static void Unregister(string prefix)
    {
        lock (Sync)
        {
            LivePrefixes.Remove(prefix);
        }
    }

    /// <summary>Names of all lab namespaces present (any run).</summary>
    public static IReadOnlyList<string> LabNamespaces() =>
        ListNamespaces().Where(n => LabName.IsMatch(n)).ToList();

    public static IReadOnlyList<string> ListNamespaces()
    {
        var result = LabProcess.Run(["ip", "netns", "list"], timeout: TimeSpan.FromSeconds(10)).EnsureSuccess("ip netns list");
        // lines look like "name" or "name (id: 3)"
        return result.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split(' ')[0])
            .ToList();
    }

    /// <summary>True when the prefix belongs to a run that is over (its process is gone or is not a test process).</summary>
    public static bool IsStale(string prefix)
    {
        var m = LabName.Match(prefix);
        if (!m.Success)
        {
            return false;
        }

        lock (Sync)
        {
            if (LivePrefixes.Contains(m.Groups[1].Value))
            {
                return false;
            }
        }

        if (!int.TryParse(m.Groups[2].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
        {
            return true;
        }

        if (pid == Environment.ProcessId)
        {
            // ours, but not a live topology: a topology of this process that was not disposed
            return true;
        }

        return !IsTestProcess(pid);
    }

    private static bool IsTestProcess(int pid)
    {
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            return cmdline.Contains("dotnet", StringComparison.Ordinal) || cmdline.Contains("testhost", StringComparison.Ordinal)
                || cmdline.Contains("QubesFirewall", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Removes stale lab namespaces (killing the processes left inside them, by id) and stale work folders.
    /// Returns the namespaces removed.</summary>
    public static IReadOnlyList<string> RemoveLeftovers()
    {
        var removed = new List<string>();
        foreach (var ns in LabNamespaces().Where(IsStale))
        {
            DeleteNamespace(ns);
            removed.Add(ns);
        }

        foreach (var dir in Directory.EnumerateDirectories(Path.GetTempPath(), WorkDirPrefix + "qfw*"))
        {
            var prefix = Path.GetFileName(dir)[WorkDirPrefix.Length..];
            if (IsStale(prefix))
            {
                TryDeleteDirectory(dir);
            }
        }

        return removed;
    }

    /// <summary>Kills the processes inside a namespace (each by its id) and deletes it.</summary>
    public static void DeleteNamespace(string ns)
    {
        KillProcessesIn(ns);
        LabProcess.Run(["ip", "netns", "delete", ns], timeout: TimeSpan.FromSeconds(10));
    }

    public static void KillProcessesIn(string ns)
    {
        var pids = LabProcess.Run(["ip", "netns", "pids", ns], timeout: TimeSpan.FromSeconds(10));
        if (!pids.Success)
        {
            return;
        }

        foreach (var line in pids.StdOut.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid != Environment.ProcessId)
            {
                LabProcess.KillPid(pid);
            }
        }
    }

    internal static void TryDeleteDirectory(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // best effort; the next run retries
        }
    }
}
