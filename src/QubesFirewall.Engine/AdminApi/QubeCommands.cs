using System.ComponentModel;
using System.Globalization;
using System.Text.RegularExpressions;
using CliWrap;
using QubesFirewall.Engine.Trust;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>
/// What a command run inside a qube returned, each stream within its <see cref="QubeAnswerLimit"/>. The bytes are
/// the qube's: <see cref="OutputText"/> keeps them (<see cref="QubeText.Decode"/>); show them only through
/// <see cref="QubeText.Escape"/> (<see cref="ShownOutput"/>, <see cref="ShownError"/>).
/// </summary>
public sealed record QubeProcessResult(int ExitCode, byte[] StandardOutput, byte[] StandardError)
{
    /// <summary>Standard output as text, every byte kept (non-UTF-8 bytes as U+DC80–U+DCFF).</summary>
    public string OutputText => QubeText.Decode(StandardOutput);

    /// <summary>Standard output, escaped for showing.</summary>
    public string ShownOutput => QubeText.Show(StandardOutput);

    /// <summary>Error output, escaped for showing.</summary>
    public string ShownError => QubeText.Show(StandardError);
}

/// <summary>
/// Runs one fixed shell command inside a qube as root, with bytes on its standard input. The live
/// backend's only way into a qube; tests replace the <c>qvm-run</c> it starts.
/// </summary>
public interface IQubeCommandRunner
{
    /// <summary>
    /// Runs <paramref name="command"/>; each output stream is read through a <see cref="BoundedReader"/>: over
    /// <paramref name="limit"/> the process is killed and QubeAnswerTooLarge names the qube and what it was asked.
    /// </summary>
    QubeProcessResult Run(string vmName, string command, ReadOnlyMemory<byte> standardInput, TimeSpan timeout, QubeAnswerLimit limit);
}

/// <summary>
/// <c>qvm-run --pass-io --no-gui --no-autostart --no-filter-escape-chars --no-color-output -u root QUBE COMMAND</c>
/// through CliWrap. The command is one of <see cref="QubeFileCommands"/>' fixed commands; file content
/// travels on standard input, never in an argument. <c>--no-autostart</c>: a halted qube is refused,
/// never started behind the user's back; <c>--no-filter-escape-chars</c>: file content is read back
/// byte for byte (qvm-run filters only when its output is a terminal, this makes it explicit).
/// </summary>
public sealed class QvmRunCommandRunner : IQubeCommandRunner
{
    public const string DefaultExecutable = "qvm-run";

    private readonly string _executable;
    private readonly Func<string, string?> _environment;

    /// <param name="executable">A path, or a name looked up on PATH (at each call).</param>
    /// <param name="environment">Where PATH comes from (tests give their own, with stand-in executables).</param>
    public QvmRunCommandRunner(string executable = DefaultExecutable, Func<string, string?>? environment = null)
    {
        _executable = executable;
        _environment = environment ?? Environment.GetEnvironmentVariable;
    }

    /// <summary>The arguments given to qvm-run, in order.</summary>
    public static IReadOnlyList<string> Arguments(string vmName, string command) =>
        ["--pass-io", "--no-gui", "--no-autostart", "--no-filter-escape-chars", "--no-color-output", "-u", "root", QubeName.Validate(vmName), command];

    public QubeProcessResult Run(string vmName, string command, ReadOnlyMemory<byte> standardInput, TimeSpan timeout, QubeAnswerLimit limit)
    {
        var executable = Resolve();
        var stdout = new BoundedReader(limit.StandardOutputBytes);
        var stderr = new BoundedReader(limit.StandardErrorBytes);
        using var cts = new CancellationTokenSource(timeout);
        // Over the cap: stop reading and kill qvm-run (cancelling CliWrap's execution kills the process).
        PipeTarget Bounded(BoundedReader reader) => PipeTarget.Create(async (stream, ct) =>
        {
            if (!await reader.ReadAsync(stream, ct).ConfigureAwait(false)) await cts.CancelAsync().ConfigureAwait(false);
        });
        QubesFirewallException TooLarge() => stdout.Exceeded
            ? BoundedReader.TooLarge(vmName, limit.What, "output", limit.StandardOutputBytes)
            : BoundedReader.TooLarge(vmName, limit.What, "error output", limit.StandardErrorBytes);
        try
        {
            var result = Cli.Wrap(executable)
                .WithArguments(Arguments(vmName, command))
                .WithStandardInputPipe(PipeSource.FromBytes(standardInput))
                .WithStandardOutputPipe(Bounded(stdout))
                .WithStandardErrorPipe(Bounded(stderr))
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(cts.Token)
                .GetAwaiter().GetResult();
            if (stdout.Exceeded || stderr.Exceeded) throw TooLarge();
            return new QubeProcessResult(result.ExitCode, stdout.ToArray(), stderr.ToArray());
        }
        catch (OperationCanceledException) when (stdout.Exceeded || stderr.Exceeded)
        {
            throw TooLarge();
        }
        catch (OperationCanceledException)
        {
            throw new QubesFirewallException(ErrorIds.QubeCommandTimeout, FailureKind.ConnectionError,
                $"qvm-run in '{vmName}' did not finish within {timeout.TotalSeconds.ToString("0", CultureInfo.InvariantCulture)} s and was stopped; the qube may be busy or unresponsive.", vmName);
        }
        catch (Win32Exception ex)
        {
            throw new QubesFirewallException(ErrorIds.QvmRunNotAvailable, FailureKind.ResourceUnavailable,
                $"Cannot start {executable}: {ex.Message}. The live backend runs commands in qubes through qvm-run, which exists only in dom0.", executable, ex);
        }
    }

    private string Resolve()
    {
        if (_executable.Contains('/')) return _executable;
        foreach (var dir in (_environment("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, _executable);
            if (File.Exists(candidate)) return candidate;
        }
        throw new QubesFirewallException(ErrorIds.QvmRunNotAvailable, FailureKind.ResourceUnavailable,
            $"There is no {_executable} on PATH. The live backend runs commands in qubes through qvm-run, which exists only in dom0.", _executable);
    }
}

/// <summary>
/// The only commands the live backend runs inside a qube: fixed shell text in which the one variable
/// part, a path, has passed a strict grammar (letters, digits and <c>._-</c> per component, under
/// <c>/rw/</c>), so it can be single-quoted without any escaping. Content never appears in a command.
/// </summary>
public static partial class QubeFileCommands
{
    /// <summary>Exit code of <see cref="Read"/> when the file does not exist.</summary>
    public const int MissingExitCode = 3;

    [GeneratedRegex(@"\A/rw(/[A-Za-z0-9_][A-Za-z0-9._-]{0,99})+\z", RegexOptions.CultureInvariant)]
    private static partial Regex PathPattern();

    /// <summary>Returns <paramref name="path"/> when it is a safe path under /rw, else throws InvalidQubePath.</summary>
    public static string ValidatePath(string? path)
    {
        if (path is null || path.Length > 255 || !PathPattern().IsMatch(path) || path.Split('/').Any(c => c is "." or ".."))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidQubePath,
                $"'{RuleGrammar.Printable(path)}' is not a path this module writes in a qube: an absolute path under /rw whose components are ASCII letters, digits, '.', '_' and '-' (not starting with '.' or '-').", path);
        return path;
    }

    /// <summary>Prints the file, or exits with <see cref="MissingExitCode"/> when it does not exist.</summary>
    public static string Read(string path)
    {
        var p = ValidatePath(path);
        return $"if [ -e '{p}' ]; then exec cat -- '{p}'; else exit {MissingExitCode}; fi";
    }

    /// <summary>Prints the file's permission bits in octal (<c>644</c>), or exits with <see cref="MissingExitCode"/> when it does not exist.</summary>
    public static string Mode(string path)
    {
        var p = ValidatePath(path);
        return $"if [ -e '{p}' ]; then exec stat -c %a -- '{p}'; else exit {MissingExitCode}; fi";
    }

    /// <summary>
    /// Writes standard input to a temporary file beside the target, sets its mode, renames it over the
    /// target: a reader in the qube sees the old or the new file, never a part. The temporary name is
    /// hidden (<c>.NAME.qfw-tmp.XXXXXX</c>): globs that run every file of a directory (<c>qubes-firewall.d/*</c>,
    /// <c>rc.local.d/*.rc</c>) never pick it up; it is created 0600 (mktemp) and keeps that mode while it is
    /// being filled, gets its final mode only once complete, just before the rename.
    /// </summary>
    public static string Write(string path, UnixFileMode mode)
    {
        var p = ValidatePath(path);
        var slash = p.LastIndexOf('/');
        var dir = p[..slash];
        var octal = Convert.ToString((int)mode & 0xFFF, 8);
        return $"umask 077 && mkdir -p -- '{dir}' && t=$(mktemp -- '{dir}/.{p[(slash + 1)..]}.{TemporaryMarker}XXXXXX') && {{ cat > \"$t\" && chmod {octal} -- \"$t\" && mv -f -- \"$t\" '{p}' || {{ rm -f -- \"$t\"; exit 1; }}; }}";
    }

    /// <summary>What the temporary names of <see cref="Write"/> carry after the hidden target name.</summary>
    public const string TemporaryMarker = "qfw-tmp.";

    /// <summary>Deletes the file (no error when it is not there).</summary>
    public static string Delete(string path) => $"rm -f -- '{ValidatePath(path)}'";

    /// <summary>Runs the shell script that follows on standard input (never written to a file), error output merged.</summary>
    public const string RunStandardInput = "exec /bin/sh -s 2>&1";

    /// <summary>Runs the file (an executable script with a shebang), its error output merged into its output.</summary>
    public static string Run(string path)
    {
        var p = ValidatePath(path);
        return $"exec '{p}' </dev/null 2>&1";
    }
}
