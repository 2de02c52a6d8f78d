using System.Collections.ObjectModel;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

namespace QubesFirewall.PowerShell.Tests;

/// <summary>Paths of the repository and of the module build.ps1 -Task Package staged.</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string StagedManifest
    {
        get
        {
            var path = Path.Combine(Root, "out", "QubesFirewall", "QubesFirewall.psd1");
            if (!File.Exists(path))
                throw new InvalidOperationException($"The staged module is missing ({path}). Run 'dotnet pwsh ./build.ps1 -Task Package' first (build.ps1 -Task Test does).");
            return path;
        }
    }

    public static string SampleRoot => Path.Combine(Root, "examples", "qubes-root");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "QubesFirewall.slnx"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root (QubesFirewall.slnx) above " + AppContext.BaseDirectory);
    }
}

/// <summary>A copy of the sample Qubes root in a temporary folder, deleted afterwards.</summary>
public sealed class SampleRootCopy : IDisposable
{
    public SampleRootCopy()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "qfw-root-" + Guid.NewGuid().ToString("N")[..12]);
        Copy(Repo.SampleRoot, Path);
    }

    public string Path { get; }

    public string FirewallXml(string qube) => System.IO.Path.Combine(Path, "appvms", qube, "firewall.xml");

    /// <summary>Every file of the root with its bytes, to prove a failed command changed nothing.</summary>
    public Dictionary<string, byte[]> Snapshot() =>
        Directory.EnumerateFiles(Path, "*", SearchOption.AllDirectories)
            .Where(f => !System.IO.Path.GetFileName(f).EndsWith(".lock", StringComparison.Ordinal))
            .ToDictionary(f => f, File.ReadAllBytes);

    public void AssertUnchanged(Dictionary<string, byte[]> before)
    {
        var after = Snapshot();
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (file, bytes) in before) Assert.True(bytes.AsSpan().SequenceEqual(after[file]), $"{file} changed");
    }

    private static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from)) File.Copy(file, System.IO.Path.Combine(to, System.IO.Path.GetFileName(file)));
        foreach (var dir in Directory.EnumerateDirectories(from)) Copy(dir, System.IO.Path.Combine(to, System.IO.Path.GetFileName(dir)));
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>The result of one script run in a hosted runspace.</summary>
public sealed record PsRun(Collection<PSObject> Output, IReadOnlyList<ErrorRecord> Errors, IReadOnlyList<string> Verbose, IReadOnlyList<string> Warnings)
{
    /// <summary>Host messages (Write-Host and the -WhatIf call listing) from the information stream.</summary>
    public IReadOnlyList<string> Information { get; init; } = [];

    /// <summary>Write-Progress records (activity: status).</summary>
    public IReadOnlyList<ProgressRecord> Progress { get; init; } = [];

    public IEnumerable<T> Of<T>() => Output.Select(o => o.BaseObject).OfType<T>();

    public void AssertNoErrors() => Assert.True(Errors.Count == 0, string.Join(Environment.NewLine, Errors.Select(e => $"{e.FullyQualifiedErrorId}: {e}")));
}

/// <summary>Runs scripts in a runspace that imported the staged module (formats included).</summary>
public static class PowerShellHost
{
    // A runspace's environment variables are the process's: runs that set them (QUBESFW_ROOT,
    // QUBESFW_QUBESD_SOCKET) must not overlap, whichever test class they come from.
    private static readonly object EnvironmentGate = new();

    public static PsRun Run(string script, string? root = null, IDictionary<string, object?>? variables = null, IDictionary<string, string>? environment = null)
    {
        lock (EnvironmentGate) return RunAlone(script, root, variables, environment);
    }

    private static PsRun RunAlone(string script, string? root, IDictionary<string, object?>? variables, IDictionary<string, string>? environment)
    {
        var iss = InitialSessionState.CreateDefault2();
        iss.ImportPSModule(Repo.StagedManifest);
        if (root is not null) iss.EnvironmentVariables.Add(new SessionStateVariableEntry("QUBESFW_ROOT", root, ""));
        // Environment variables are the process's: tests that set them share the "Process environment" collection.
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) iss.EnvironmentVariables.Add(new SessionStateVariableEntry(name, value, ""));
        using var runspace = RunspaceFactory.CreateRunspace(iss);
        runspace.Open();
        using var ps = System.Management.Automation.PowerShell.Create(runspace);
        foreach (var (name, value) in variables ?? new Dictionary<string, object?>()) runspace.SessionStateProxy.SetVariable(name, value);
        if (root is not null) runspace.SessionStateProxy.SetVariable("QubesRoot", root);
        ps.AddScript(script);
        var output = ps.Invoke();
        return new PsRun(output, ps.Streams.Error.ToList(), ps.Streams.Verbose.Select(v => v.Message).ToList(), ps.Streams.Warning.Select(w => w.Message).ToList())
        {
            Information = ps.Streams.Information.Select(i => i.MessageData?.ToString() ?? "").ToList(),
            Progress = ps.Streams.Progress.ToList(),
        };
    }
}
