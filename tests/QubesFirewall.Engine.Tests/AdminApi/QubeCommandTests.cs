using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// Files and scripts inside qubes through a stand-in qvm-run: the exact arguments, content only on
/// standard input, the fixed commands really run by sh, and rollouts that put failed chains back.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class QubeCommandTests : IDisposable
{
    private const string RcLocal = "/rw/config/rc.local";
    private const string FwScript = "/rw/config/qubes-firewall-user-script";
    private const UnixFileMode Executable = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    private AdminApiBackend Backend => _live.Backend;
    private StandInQvmRun QvmRun => _live.QvmRun;

    [Fact]
    public void Reading_runs_a_fixed_cat_with_nothing_on_stdin()
    {
        QvmRun.Put("work", RcLocal, "#!/bin/sh\necho hi\n");
        Assert.Equal("#!/bin/sh\necho hi\n", Backend.ReadQubeFile("work", RcLocal));
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(["--pass-io", "--no-gui", "--no-autostart", "--no-filter-escape-chars", "--no-color-output", "-u", "root", "work",
            "if [ -e '/rw/config/rc.local' ]; then exec cat -- '/rw/config/rc.local'; else exit 3; fi"], call.Args);
        Assert.Empty(call.Stdin);
    }

    [Fact]
    public void A_missing_file_reads_as_null()
    {
        Assert.Null(Backend.ReadQubeFile("work", RcLocal));
    }

    [Fact]
    public void Content_travels_on_stdin_never_in_the_command_line()
    {
        var content = "#!/bin/sh\n# it's \"quoted\" $(not run) `nor this` ; rm -rf / \u00e9\nnft -f - <<'EOF'\nEOF\n";
        Backend.WriteQubeFile("sys-net", FwScript, content, Executable);
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(Encoding.UTF8.GetBytes(content), call.Stdin);
        Assert.All(call.Args, a => Assert.DoesNotContain("not run", a));
        Assert.Equal(QubeFileCommands.Write(FwScript, Executable), call.Args[^1]);
        // The real fixed command ran: the file is there, whole, with its mode, and no temporary file is left.
        Assert.Equal(content, QvmRun.Read("sys-net", FwScript));
        Assert.Equal(Executable, File.GetUnixFileMode(QvmRun.FileOf("sys-net", FwScript)));
        Assert.Single(Directory.EnumerateFiles(Path.GetDirectoryName(QvmRun.FileOf("sys-net", FwScript))!));
        Assert.Equal(content, Backend.ReadQubeFile("sys-net", FwScript));
    }

    [Theory]
    [InlineData("/rw/config/qubes-firewall-user-script")]
    [InlineData("/rw/config/qubes-firewall.d/50-mine")]
    public void The_temporary_file_is_hidden_beside_the_target_and_private_until_complete(string path)
    {
        // Shims on the command's PATH record the temporary file's name and mode just before chmod and mv touch it.
        var log = Path.Combine(QvmRun.Folder, "shims.log");
        foreach (var tool in new[] { "chmod", "mv" })
        {
            var shim = Path.Combine(QvmRun.Shims, tool);
            File.WriteAllText(shim, $"#!/bin/bash\nf=\"${{@: {(tool == "mv" ? "-2:1" : "-1")}}}\"\necho \"{tool} $(stat -c %a \"$f\") $f\" >> '{log}'\nexec /bin/{tool} \"$@\"\n");
            File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        Backend.WriteQubeFile("sys-firewall", path, "#!/bin/sh\necho x\n", Executable);

        var lines = File.ReadAllLines(log).Select(l => l.Split(' ', 3)).ToList();
        Assert.Equal(["chmod", "mv"], lines.Select(l => l[0]));
        Assert.Equal("600", lines[0][1]); // created by mktemp, filled while only root can read it
        Assert.Equal("755", lines[1][1]); // its final mode once complete, then renamed
        Assert.Equal(lines[0][2], lines[1][2]);
        var target = QvmRun.FileOf("sys-firewall", path);
        var temporary = lines[1][2];
        Assert.Equal(Path.GetDirectoryName(target), Path.GetDirectoryName(temporary));
        Assert.StartsWith("." + Path.GetFileName(target) + ".qfw-tmp.", Path.GetFileName(temporary));
        // A glob that runs every file of the directory never sees it; afterwards only the target is there.
        Assert.DoesNotContain(Path.GetFileName(temporary), Directory.EnumerateFiles(Path.GetDirectoryName(target)!).Select(Path.GetFileName).Where(n => !n!.StartsWith('.')));
        Assert.Equal([Path.GetFileName(target)], Directory.EnumerateFiles(Path.GetDirectoryName(target)!).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("/rw/../etc/passwd")]
    [InlineData("/rw/config/a b")]
    [InlineData("/rw/config/it's")]
    [InlineData("/rw/config/$(reboot)")]
    [InlineData("/rw/config/-rf")]
    [InlineData("/rw/config/.hidden")]
    [InlineData("rw/config/rc.local")]
    [InlineData("/rw")]
    public void Paths_outside_the_grammar_are_refused_before_any_process(string path)
    {
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => Backend.WriteQubeFile("work", path, "x", Executable)).ErrorId);
        Assert.Equal("InvalidQubePath", Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("work", path)).ErrorId);
        Assert.Empty(QvmRun.Calls);
    }

    [Fact]
    public void A_script_runs_and_its_output_and_exit_code_come_back()
    {
        QvmRun.Put("sys-firewall", FwScript, "#!/bin/sh\necho applied\necho warn >&2\nexit 0\n", Executable);
        var result = Backend.RunQubeScript("sys-firewall", FwScript);
        Assert.True(result.Executed);
        Assert.True(result.Succeeded);
        Assert.Contains("applied", result.Output);
        Assert.Contains("warn", result.Output);
        Assert.Equal("exec '/rw/config/qubes-firewall-user-script' </dev/null 2>&1", QvmRun.Calls[0].Args[^1]);
    }

    [Fact]
    public void A_generated_script_runs_from_stdin()
    {
        var result = Backend.RunQubeShellScript("sys-net", "echo from stdin\nexit 4\n", "port forward web");
        Assert.Equal(4, result.ExitCode);
        Assert.Contains("from stdin", result.Output);
        var call = Assert.Single(QvmRun.Calls);
        Assert.Equal(QubeFileCommands.RunStandardInput, call.Args[^1]);
        Assert.Equal("echo from stdin\nexit 4\n"u8.ToArray(), call.Stdin);
    }

    [Fact]
    public void A_halted_qube_is_named_not_reported_as_exit_code_1()
    {
        QvmRun.Halt("untrusted");
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.WriteQubeFile("untrusted", RcLocal, "x", Executable));
        Assert.Equal("QubeNotRunning", ex.ErrorId);
        Assert.Contains("'untrusted'", ex.Message);
        Assert.Contains("halted", ex.Message);
    }

    [Fact]
    public void A_failing_command_reports_its_exit_code_and_error_output()
    {
        QvmRun.FailIn("work", "cat --");
        var ex = Assert.Throws<QubesFirewallException>(() => Backend.ReadQubeFile("work", RcLocal));
        Assert.Equal("QubeCommandFailed", ex.ErrorId);
        Assert.Contains("exited with code 7", ex.Message);
        Assert.Contains("boom in work", ex.Message);
    }

    [Fact]
    public void No_qvm_run_is_a_clear_error()
    {
        var backend = new AdminApiBackend(Backend.Client, new QvmRunCommandRunner(environment: n => n == "PATH" ? "/nonexistent" : null));
        Assert.Equal("QvmRunNotAvailable", Assert.Throws<QubesFirewallException>(() => backend.ReadQubeFile("work", RcLocal)).ErrorId);
    }

    // ------------------------------------------------------------------ rollouts

    /// <summary>Per qube: its hook file replaced, then a script run from standard input; a rollback writes the old file and runs the old script.</summary>
    private List<DeploymentStep> Chain(params string[] vms) => vms.SelectMany(vm =>
    {
        var previous = $"#!/bin/sh\necho previous {vm} >> /dev/null\n";
        QvmRun.Put(vm, FwScript, previous, Executable);
        return new[]
        {
            new DeploymentStep { Kind = DeploymentStepKind.WriteFile, VMName = vm, Description = $"{vm}: write", Path = FwScript, Content = $"#!/bin/sh\necho new {vm}\n", PreviousContent = previous, Mode = Executable },
            new DeploymentStep { Kind = DeploymentStepKind.RunScript, VMName = vm, Description = $"{vm}: run", Script = $"echo run new {vm}\n", PreviousScript = $"echo run previous {vm}\n", ScriptName = "test script" },
        };
    }).ToList();

    private List<string> Runs() => QvmRun.Calls.Where(c => c.Args[^1] == QubeFileCommands.RunStandardInput).Select(c => Encoding.UTF8.GetString(c.Stdin).Trim()).ToList();

    [Fact]
    public void A_rollout_applies_each_hop_in_order()
    {
        var steps = Chain("sys-net", "sys-firewall", "work");
        var result = Rollout.Run(Backend, steps);
        Assert.True(result.Succeeded);
        Assert.All(result.Steps, s => Assert.Equal(DeploymentStepStatus.Applied, s.Status));
        foreach (var s in steps.Where(s => s.Kind == DeploymentStepKind.WriteFile)) Assert.Equal(s.Content, QvmRun.Read(s.VMName, FwScript));
        // Per hop: the file's mode (for a rollback), read (verify), write, run.
        Assert.Equal(["sys-net", "sys-net", "sys-net", "sys-net", "sys-firewall", "sys-firewall", "sys-firewall", "sys-firewall", "work", "work", "work", "work"], QvmRun.Calls.Select(c => c.Args[7]));
        Assert.Equal(QubeFileCommands.Mode(FwScript), QvmRun.Calls[0].Args[^1]);
        Assert.Equal(["echo run new sys-net", "echo run new sys-firewall", "echo run new work"], Runs());
    }

    [Fact]
    public void One_failing_hop_stops_the_rollout_and_the_others_are_restored()
    {
        var steps = Chain("sys-net", "sys-firewall", "work", "personal");
        QvmRun.FailIn("work", QubeFileCommands.RunStandardInput);
        var progress = new List<DeploymentProgress>();
        var result = Rollout.Run(Backend, steps, new RolloutOptions { Progress = progress.Add });
        Assert.False(result.Succeeded);
        Assert.True(result.FullyRolledBack);
        Assert.Equal(
            [
                DeploymentStepStatus.RolledBack, DeploymentStepStatus.RolledBack, DeploymentStepStatus.RolledBack, DeploymentStepStatus.RolledBack,
                DeploymentStepStatus.RolledBack, DeploymentStepStatus.Failed, DeploymentStepStatus.NotReached, DeploymentStepStatus.NotReached,
            ], result.Steps.Select(s => s.Status));
        Assert.Contains("boom in work", result.Failed!.Message);
        foreach (var vm in new[] { "sys-net", "sys-firewall", "work", "personal" }) Assert.Equal($"#!/bin/sh\necho previous {vm} >> /dev/null\n", QvmRun.Read(vm, FwScript));
        Assert.DoesNotContain(QvmRun.Calls, c => c.Args[7] == "personal");
        // The failed hop and then the ones before it, last first, load their previous rules again.
        Assert.Equal(["echo run new sys-net", "echo run new sys-firewall", "echo run new work", "echo run previous work", "echo run previous sys-firewall", "echo run previous sys-net"], Runs());
        Assert.Equal(["sys-net", "sys-firewall", "work"], progress.Where(p => !p.RollingBack).Select(p => p.Hop).Distinct());
        Assert.Equal([3, 3], progress.Where(p => !p.RollingBack).Select(p => p.HopNumber).Skip(4));
        Assert.All(progress, p => Assert.Equal(4, p.HopCount));
        Assert.Equal(["work", "work", "sys-firewall", "sys-firewall", "sys-net", "sys-net"], progress.Where(p => p.RollingBack).Select(p => p.Hop));
        var explained = result.Explain("Add test", "Try again.")!;
        Assert.Contains("failed at \"work: run\"", explained);
        Assert.Contains("Rolled back: /rw/config/qubes-firewall-user-script of sys-net; the rules running in sys-net;", explained);
        Assert.Contains("Nothing is left changed.", explained);
    }

    [Fact]
    public void A_file_changed_since_the_plan_stops_the_rollout_and_is_left_alone()
    {
        var steps = Chain("sys-net", "sys-firewall");
        QvmRun.Put("sys-firewall", FwScript, "#!/bin/sh\n# edited by hand meanwhile\n", Executable);
        var result = Rollout.Run(Backend, steps);
        Assert.Equal([DeploymentStepStatus.RolledBack, DeploymentStepStatus.RolledBack, DeploymentStepStatus.Failed, DeploymentStepStatus.NotReached], result.Steps.Select(s => s.Status));
        Assert.Contains("changed since it was read", result.Steps[2].Message);
        Assert.Equal("#!/bin/sh\n# edited by hand meanwhile\n", QvmRun.Read("sys-firewall", FwScript));
        Assert.Equal("#!/bin/sh\necho previous sys-net >> /dev/null\n", QvmRun.Read("sys-net", FwScript));
    }

    [Fact]
    public void A_file_the_rollout_created_is_deleted_again()
    {
        var steps = new List<DeploymentStep>
        {
            new() { Kind = DeploymentStepKind.WriteFile, VMName = "work", Description = "work: write", Path = RcLocal, Content = "#!/bin/sh\necho new\n", PreviousContent = null, Mode = Executable },
            new() { Kind = DeploymentStepKind.RunScript, VMName = "sys-net", Description = "sys-net: run", Script = "exit 5\n", ScriptName = "test script" },
        };
        var result = Rollout.Run(Backend, steps);
        Assert.Equal([DeploymentStepStatus.RolledBack, DeploymentStepStatus.Failed], result.Steps.Select(s => s.Status));
        Assert.Contains("exit code 5", result.Steps[1].Message);
        Assert.Null(QvmRun.Read("work", RcLocal));
        Assert.Equal(QubeFileCommands.Delete(RcLocal), QvmRun.Calls[^1].Args[^1]);
    }

    [Fact]
    public void Halted_qubes_are_refused_by_name()
    {
        var inventory = Backend.GetInventory();
        var halted = QubeStarter.NotRunning(inventory, ["sys-net", "sys-whonix", "anon-whonix", "sys-whonix"]);
        Assert.Equal(["sys-whonix", "anon-whonix"], halted.Select(q => q.Name));
        var ex = QubeStarter.Refusal(halted, "add a test");
        Assert.Equal("QubesNotRunning", ex.ErrorId);
        Assert.Contains("sys-whonix (halted), anon-whonix (halted)", ex.Message);
        Assert.Contains("-Start", ex.Message);
        Assert.Contains("Nothing was changed", ex.Message);
        Assert.Empty(QvmRun.Calls);
    }

    [Fact]
    public void Halted_qubes_are_started_in_the_order_given()
    {
        var halted = QubeStarter.NotRunning(Backend.GetInventory(), ["sys-net", "sys-whonix", "anon-whonix"]);
        Assert.Equal(["sys-whonix", "anon-whonix"], QubeStarter.Start(Backend, halted, "test"));
        Assert.Equal(["sys-whonix", "anon-whonix"], _live.Server.Calls.Where(c => c.Method == "admin.vm.Start").Select(c => c.Destination));
        Assert.Empty(QubeStarter.NotRunning(Backend.GetInventory(), ["sys-whonix", "anon-whonix"]));
    }

    [Fact]
    public void Starting_offline_records_the_power_state()
    {
        var root = Path.Combine(_live.Directory, "offline");
        LiveQubesd.Copy(OfflineRootTests.SamplePath(), root);
        using var offline = new OfflineRoot(root);
        var halted = QubeStarter.NotRunning(offline.GetInventory(), ["sys-net", "untrusted"]);
        Assert.Equal(["untrusted"], QubeStarter.Start(offline, halted, "test"));
        Assert.Equal(PowerState.Running, offline.GetInventory().Get("untrusted").State);
        Assert.Equal("Running\n", File.ReadAllText(Path.Combine(root, "qubesfirewall-state", "untrusted", "power-state")));
    }
}
